"""Stage `filter` (comparison grid): keep the demonstrations the coherent reward ranks highest (§5),
and draw a random subset of the same size to compare against.

usage: python stages/filter_demos.py BASE_DIR SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON
Writes OUT_DIR/top.jsonl, OUT_DIR/random.jsonl and OUT_DIR/scores.jsonl (every demo with its reward).
"""

import sys
from pathlib import Path

from srppo.data.records import read_jsonl, write_jsonl
from srppo.io import atomic_dir
from srppo.methods.datafilter import demo_rewards, filter_report, split_by_reward
from srppo.models.loading import frozen, load_tokenizer, setup_runtime
from srppo.runtime.stage import Timer, load, log, write_results


def main(base_dir, sft_dir, demos_path, out_dir, metrics_path, report_path) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("filter")
    tok = load_tokenizer(sft_dir)
    demos = read_jsonl(demos_path)
    with timer.phase(f"score {len(demos)} demonstrations"):
        rewards = demo_rewards(tok, demos, frozen(sft_dir, device, dtype), frozen(base_dir, device, dtype), device,
                               params.rollouts.score_batch_size)
    top, rand = split_by_reward(demos, rewards, params.data_filter.keep_fraction, params.runtime.seed)
    report = filter_report(demos, rewards, top)
    log("filter", f"kept {len(top)} of {len(demos)}: mean reward {report['reward_mean_kept']:.2f} "
        f"(all {report['reward_mean_all']:.2f})")
    with atomic_dir(out_dir) as tmp:
        write_jsonl(Path(tmp) / "top.jsonl", top)
        write_jsonl(Path(tmp) / "random.jsonl", rand)
        write_jsonl(Path(tmp) / "scores.jsonl", [{"id": d["id"], "family": d.get("family"), "reward": float(r)}
                                                  for d, r in zip(demos, rewards)])
    summary = {k: report[k] for k in ("demos", "kept", "reward_mean_all", "reward_mean_kept")}
    write_results(metrics_path, report_path, summary, report, timer)  # threshold and families: the report


if __name__ == "__main__":
    main(*sys.argv[1:])
