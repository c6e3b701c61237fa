"""Stage `reward_model` (comparison grid): the RM-PPO baseline's Bradley-Terry reward model.

p_SFT answers every demonstration prompt `reward_model.samples_per_prompt` times; the checkers rank
the answers (and the demonstration), or, with `reward_model.preferences: demonstrations` (real data
without checkers), the demonstration is preferred to each sample. A model initialised from p_SFT
learns the ranking. A tenth of the prompts is held out to report how often it agrees with the labels.
usage: python stages/reward_model.py SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each training step goes to the DVCLive directory LIVE_DIR as it ends; the panels of LIVE_DIR/curves.png are
drawn at the end.
"""

import itertools
import random
import sys
from pathlib import Path

from live_curves import live_curves

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.reward_model import (
    pair_accuracy,
    preference_pairs,
    save_reward_model,
    train_reward_model,
)
from srppo.methods.sft import demos_within_max_len
from srppo.models.loading import context_length, frozen, load_tokenizer, setup_runtime
from srppo.rollout.engine import SamplingParams
from srppo.rollout.sampling import prompt_ids, rollout_engine
from srppo.runtime.stage import Timer, load, log, progress, write_results
from srppo.scoring.reward_model import load_reward_model


def sample_answers(params, tok, sft_dir, prompts, device, dtype, bar) -> list[list]:
    """`samples_per_prompt` p_SFT answers per prompt (adjacent rows), grouped back per prompt."""
    cfg = params.reward_model
    policy = frozen(sft_dir, device, dtype)
    engine = rollout_engine(params.rollouts, policy, tok, sft_dir, params.runtime.seed, dtype)
    k = cfg.samples_per_prompt
    gens = engine.generate([p for p in prompts for _ in range(k)],
                           SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature), progress=bar)
    engine.close()
    return [gens[i * k : (i + 1) * k] for i in range(len(prompts))]


def main(sft_dir, demos_path, out_dir, metrics_path, report_path, live_dir) -> None:
    params = load()
    cfg, seed = params.reward_model, params.runtime.seed
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("reward_model")
    tok = load_tokenizer(sft_dir)
    records = read_jsonl(demos_path)
    prompt_ids(tok, records, demos_path, cfg.max_new_tokens, context_length(sft_dir))  # every row checked
    if cfg.include_demos or cfg.preferences == "demonstrations":  # SFT's length policy: pairs train in batches
        records = demos_within_max_len(tok, records, params.sft.max_len, demos_path, params.sft.overlength,
                                       lambda msg: log("reward_model", msg))
    if cfg.n_prompts and cfg.n_prompts < len(records):
        records = random.Random(seed).sample(records, cfg.n_prompts)
    prompts = prompt_ids(tok, records)
    with timer.phase("sample answers"), progress(len(prompts) * cfg.samples_per_prompt, "rm answers") as bar:
        answers = sample_answers(params, tok, sft_dir, prompts, device, dtype, bar)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, len(order) // 10)])
    split = lambda keep: [[x[i] for i in order if (i in held) == keep] for x in (records, prompts, answers)]
    train = preference_pairs(*split(False), tok, cfg, seed, demos_path)
    test = preference_pairs(*split(True), tok, cfg, seed, demos_path)
    if not train:
        raise SystemExit(f"reward_model: the labels separate no pair of answers in {demos_path}: nothing to learn")
    log("reward_model", f"{len(train)} training pairs, {len(test)} held-out pairs")
    model = load_reward_model(sft_dir, device, dtype, trainable=True)
    before = pair_accuracy(model, tok, test, cfg.batch_size, device)
    steps = itertools.count(1)  # the rows' `step`, as train_reward_model numbers them
    with timer.phase(f"train on {len(train)} pairs"), live_curves(live_dir) as log_step, \
            progress(-(-len(train) // cfg.batch_size) * cfg.epochs, "reward model", "step") as bar:
        def on_step(row):
            bar.update(1)
            bar.set_postfix(loss=f"{row['rm_loss']:.3f}", acc=f"{row['rm_accuracy']:.2f}")
            log_step(next(steps), row)
        history = train_reward_model(model, tok, train, cfg, seed, on_step)
    after = pair_accuracy(model, tok, test, cfg.batch_size, device)
    log("reward_model", f"held-out pair accuracy {before} -> {after}")
    info = {"train_pairs": len(train), "heldout_pairs": len(test), "heldout_accuracy_before": before,
            "heldout_accuracy": after, "final_loss": history[-1]["rm_loss"]}
    with timer.phase("save"), atomic_dir(out_dir) as tmp:
        save_reward_model(model, tok, tmp, info)
    plots.curves(history, ["rm_loss", "rm_accuracy", "rm_margin"], Path(live_dir) / "curves.png",
                 "Reward model (Bradley-Terry)")
    write_results(metrics_path, report_path, info, info, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
