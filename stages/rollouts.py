"""Stage `rollouts`: sample p_SFT on PPO prompts, score them (coherent reward or reward model), save parquet buffers.

These buffers are the critic warm-up data and a browsable record of what p_SFT does before PPO.
usage: python stages/rollouts.py BASE_DIR SFT_DIR PROMPTS_JSONL OUT_DIR METRICS_JSON REPORT_JSON
"""

import sys

from srppo.models.loading import setup_runtime
from srppo.rollout.sampling import engines_used
from srppo.runtime.stage import Timer, load, write_results
from srppo.scoring.rollouts import make_rollouts


def main(base_dir, sft_dir, prompts_path, out_dir, metrics_path, report_path) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("rollouts")
    buffers = make_rollouts(params, base_dir, sft_dir, prompts_path, out_dir, device, dtype, timer=timer)
    mean = lambda key: sum(b[key] for b in buffers) / len(buffers)  # buffers are of equal size
    write_results(metrics_path, report_path, {k: mean(k) for k in ("reward_mean", "length_mean", "eos_rate")},
                  {"buffers": buffers, "engine": engines_used()}, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
