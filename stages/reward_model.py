"""Stage `reward_model` (comparison grid): the RM-PPO baseline's Bradley-Terry reward model.

p_SFT answers every demonstration prompt `reward_model.samples_per_prompt` times; the checkers rank
the answers (and the demonstration), or, with `reward_model.preferences: demonstrations` (real data
without checkers), the demonstration is preferred to each sample. A model initialised from p_SFT
learns the ranking. A tenth of the prompts is held out to report how often it agrees with the labels.
The trained head is then rescaled so that its rewards on p_SFT's answers spread as much as the coherent
reward does on p_SFT's samples: SCALE_OF is the coherent reward's normaliser (the calibrate stage's
reward_norm.json, whose `scale` is that spread), so that β prices the KL alike in RM-PPO and in SRPPO.

usage: python stages/reward_model.py SFT_DIR DEMOS_JSONL SCALE_OF OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each training step goes to the DVCLive directory LIVE_DIR as it ends; the panels of LIVE_DIR/curves.png are
drawn at the end.
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.evaluation import plots
from srppo.io import atomic_dir, read_json
from srppo.methods.reward_model import run_reward_model, save_reward_model
from srppo.models.loading import setup_runtime
from srppo.runtime.stage import Timer, load, write_results
from srppo.scoring.rewards import RewardNormalizer


def main(sft_dir, demos_path, scale_of, out_dir, metrics_path, report_path, live_dir) -> None:
    params = load()
    try:  # a wrong file fails here, before any sampling or training
        target_std = RewardNormalizer.from_dict(read_json(scale_of)).scale
    except (KeyError, TypeError) as missing:
        raise SystemExit(f"{scale_of}: not a reward normaliser (the calibrate stage's reward_norm.json): "
                         f"no {missing}") from None
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("reward_model")
    with live_curves(live_dir) as log_step:
        run = run_reward_model(params, sft_dir, demos_path, device, dtype, target_std=target_std, timer=timer,
                               on_step=lambda row: log_step(row["step"], row))
    with timer.phase("save"), atomic_dir(out_dir) as tmp:
        save_reward_model(run.model, run.tokenizer, tmp, run.info)
    plots.curves(run.history, ["rm_loss", "rm_accuracy", "rm_margin"], Path(live_dir) / "curves.png",
                 "Reward model (Bradley-Terry)")
    write_results(metrics_path, report_path, run.info, run.info, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
