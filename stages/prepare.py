"""Stage `prepare`: demonstrations, PPO prompts, calibration and eval sets as JSONL.

usage: python stages/prepare.py OUT_DIR METRICS_JSON REPORT_JSON
"""

import sys
from pathlib import Path

from srppo.data.prepare import SPLITS, describe, prepare
from srppo.data.records import write_jsonl
from srppo.runtime.stage import Timer, load, log, write_results


def main(out_dir: str, metrics_path: str, report_path: str) -> None:
    params = load()
    timer = Timer("prepare")
    with timer.phase(f"build ({params.prepare.source}, overlap={params.prepare.overlap})"):
        splits = prepare(params.prepare)
    for name in SPLITS:  # each file is its own DVC output, written atomically
        write_jsonl(Path(out_dir) / f"{name}.jsonl", splits[name])
    stats = describe(splits)
    for name in SPLITS:
        log("prepare", f"{name}: {stats[name]['rows']} rows, {len(stats[name]['families'])} families")
    # rows per split in the metrics; families and domains in the report
    write_results(metrics_path, report_path, {"rows": {name: stats[name]["rows"] for name in SPLITS}}, stats, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
