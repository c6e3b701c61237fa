"""Stage `calibrate`: measure the reward (coherent, or a reward model's) and write the normalisation PPO uses.

usage: python stages/calibrate.py BASE_DIR SFT_DIR CALIBRATION_JSONL PROMPTS_JSONL NORM_JSON METRICS_JSON REPORT_JSON
       PLOT_PNG
"""

import sys

from srppo.evaluation import plots
from srppo.io import write_json
from srppo.models.loading import setup_runtime
from srppo.rollout.sampling import engines_used
from srppo.runtime.stage import Timer, load, write_results
from srppo.scoring.calibrate import calibrate_reward

LABELS = {"demonstrations": "demonstrations", "sft_samples": "p_SFT samples", "pt_samples": "p_PT samples"}


def summary(report: dict) -> dict:
    """A handful of numbers for `dvc exp show`; the distributions and the normaliser stay in the report."""
    return {"reward_mean": {k: report[k]["mean"] for k in ("demonstrations", "sft_samples", "pt_samples")},
            **{k: report[k] for k in ("auc_demo_vs_pt", "auc_sft_vs_pt", "length_corr_sft_samples")}}


def main(base_dir, sft_dir, calib_path, prompts_path, norm_path, metrics_path, report_path, plot_path) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("calibrate")
    cal = calibrate_reward(params, base_dir, sft_dir, calib_path, prompts_path, device, dtype, timer=timer)
    write_json(norm_path, cal.normalizer.to_dict())
    plots.reward_histogram({LABELS[k]: r.tolist() for k, r in cal.rewards.items()}, plot_path,
                           f"{params.reward.source.capitalize()} reward before PPO")
    report = {**cal.report, "engine": engines_used()}
    write_results(metrics_path, report_path, summary(cal.report), report, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
