"""Stage `diagnose`: before PPO, does the reward point toward the checker? Best-of-k by reward among p_SFT's
samples against their pass rate, per family (srppo/evaluation/diagnose.py). Nothing downstream reads it.

usage: python stages/diagnose.py BASE_DIR SFT_DIR PROMPTS_JSONL OUT_DIR METRICS_JSON REPORT_JSON
"""

import sys

from srppo.evaluation.diagnose import diagnose_reward
from srppo.models.loading import setup_runtime
from srppo.rollout.sampling import engines_used
from srppo.runtime.stage import Timer, load, write_results

METRICS = ("auc_mean", "families_toward", "out_domain_families_gaining_10")  # the rest: the report


def main(base_dir, sft_dir, prompts_path, out_dir, metrics_path, report_path) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("diagnose")
    result = diagnose_reward(params, base_dir, sft_dir, prompts_path, out_dir, device, dtype, timer=timer)
    cfg = params.diagnose
    write_results(metrics_path, report_path, {k: result.headline[k] for k in METRICS},
                  {**result.headline, "families": result.families, "ks": cfg.ks, "margin": cfg.margin,
                   "samples": len(result.samples), "reward_source": params.reward.source,
                   "engine": engines_used()}, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
