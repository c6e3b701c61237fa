"""Stage `filter` (comparison grid): keep the demonstrations the coherent reward ranks highest (§5),
and draw a random subset of the same size to compare against.

usage: python stages/filter_demos.py BASE_DIR SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON
Writes OUT_DIR/top.jsonl, OUT_DIR/random.jsonl and OUT_DIR/scores.jsonl (every demo with its reward).
"""

import sys
from pathlib import Path

from srppo.data.records import write_jsonl
from srppo.io import atomic_dir
from srppo.methods.datafilter import run_data_filter
from srppo.models.loading import setup_runtime
from srppo.runtime.stage import Timer, load, write_results


def main(base_dir, sft_dir, demos_path, out_dir, metrics_path, report_path) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("filter")
    run = run_data_filter(params, base_dir, sft_dir, demos_path, device, dtype, timer=timer)
    with atomic_dir(out_dir) as tmp:
        write_jsonl(Path(tmp) / "top.jsonl", run.top)
        write_jsonl(Path(tmp) / "random.jsonl", run.random_subset)
        write_jsonl(Path(tmp) / "scores.jsonl", run.scores)
    summary = {k: run.report[k] for k in ("demos", "kept", "reward_mean_all", "reward_mean_kept")}
    write_results(metrics_path, report_path, summary, run.report, timer)  # threshold and families: the report


if __name__ == "__main__":
    main(*sys.argv[1:])
