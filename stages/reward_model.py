"""Stage `reward_model` (comparison grid): the RM-PPO baseline's Bradley-Terry reward model.

p_SFT answers every demonstration prompt `reward_model.samples_per_prompt` times; the checkers rank
the answers (and the demonstration), or, with `reward_model.preferences: demonstrations` (real data
without checkers), the demonstration is preferred to each sample. A model initialised from p_SFT
learns the ranking. A tenth of the prompts is held out to report how often it agrees with the labels.

usage: python stages/reward_model.py SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each training step goes to the DVCLive directory LIVE_DIR as it ends; the panels of LIVE_DIR/curves.png are
drawn at the end.
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.reward_model import run_reward_model, save_reward_model
from srppo.models.loading import setup_runtime
from srppo.runtime.stage import Timer, load, write_results


def main(sft_dir, demos_path, out_dir, metrics_path, report_path, live_dir) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("reward_model")
    with live_curves(live_dir) as log_step:
        run = run_reward_model(params, sft_dir, demos_path, device, dtype, timer=timer,
                               on_step=lambda row: log_step(row["step"], row))
    with timer.phase("save"), atomic_dir(out_dir) as tmp:
        save_reward_model(run.model, run.tokenizer, tmp, run.info)
    plots.curves(run.history, ["rm_loss", "rm_accuracy", "rm_margin"], Path(live_dir) / "curves.png",
                 "Reward model (Bradley-Terry)")
    write_results(metrics_path, report_path, run.info, run.info, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
