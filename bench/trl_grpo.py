"""The same PPO iteration through TRL's GRPOTrainer, with the coherent reward as its reward function.

    python bench/trl_grpo.py OUT.json [--quick]

Matched to `bench/workloads.py ppo --estimator grpo` (and the gae run's buffer): the same p_SFT start
(data/sft) and p_PT, the same prompt records in the same order (4 per iteration, no shuffling), 4
samples each = 16 rollouts, max 48 new tokens, temperature 1 / top-p 1 / no top-k, Adam at
lr 1e-5 with grad-norm clip 1, 8 rollouts per optimizer step and 2 steps per generation (TRL's
steps_per_generation), one pass (num_iterations 1), KL coefficient 0.2 to p_SFT (TRL: beta, in the
loss; srppo: in the reward). TRL at its best CPU setting: bf16 (accelerate's autocast over fp32
weights) where the CPU has bf16 matrix units, as srppo's `runtime.precision: auto` does, fp32
elsewhere; the attention kernel srppo's `runtime.attention: auto` picks (eager on a CPU, faster there at
these lengths) for its policy and reference models; gradient checkpointing (on by default in TRL) off:
nothing here needs the memory.
The reward is srppo's own `score()` (p_SFT and p_PT forwards, under the same autocast) with the
calibrated normaliser, so both sides pay for the same reward model (which runs each distinct
prompt's forward once per group of samples).
What still differs (by design of each library): TRL runs p_SFT twice per iteration (its reference
model for the KL term, and inside the reward), srppo once for both; TRL generates the whole batch in
one call without sorting prompts by length and prefills every row, where srppo's engine prefills a
repeated prompt once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import (  # noqa: E402
    BASE_DIR,
    NORM,
    SFT_DIR,
    bench_prompts,
    machine,
    n_params,
    ppo_setup,
    summarise,
    use_precision,
)


def _timed(fn, bucket: dict, key: str):
    """Wrap `fn` to add its wall seconds to bucket[key]: TRL's phases, timed from outside its trainer."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket[key] = bucket.get(key, 0.0) + time.perf_counter() - t
    return wrapper


def coherent_reward_fn(tok, sft, pt, normalizer, max_new: int):
    """A TRL reward function: r = log p_SFT(y|x) - log p_PT(y|x), normalised as the ppo stage does."""
    from srppo.data.batch import encode_prompt
    from srppo.rollout.engine import Generation
    from srppo.scoring.score import score

    def coherent_reward(prompts, completion_ids, **kwargs) -> list[float]:
        gens = [Generation(encode_prompt(tok, p), list(c), truncated=len(c) >= max_new and c[-1] != tok.eos_token_id)
                for p, c in zip(prompts, completion_ids)]
        scored = score(gens, sft, pt, tok.pad_token_id, torch.device("cpu"), 16)
        return normalizer(scored.reward_raw).tolist()
    return coherent_reward


def grpo_config(shape: dict, out_dir: str, bf16: bool):
    from trl import GRPOConfig

    from srppo.models.loading import resolve_attention

    steps_per_gen = shape["buffer"] // shape["mini_batch_size"]
    return GRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=bf16, fp16=False, gradient_checkpointing=False,
        per_device_train_batch_size=shape["mini_batch_size"], gradient_accumulation_steps=1,
        steps_per_generation=steps_per_gen, num_generations=shape["group_size"], num_iterations=1,
        max_steps=shape["iterations"] * steps_per_gen, max_completion_length=shape["max_new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, learning_rate=1e-5, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=1.0, beta=0.2, shuffle_dataset=False, seed=0,
        report_to=[], save_strategy="no", logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0,
        model_init_kwargs={"attn_implementation": resolve_attention("auto", torch.device("cpu"))})


def run(quick: bool) -> dict:
    import tempfile

    from datasets import Dataset
    from trl import GRPOTrainer
    from trl import __version__ as trl_version

    from srppo.io import read_json
    from srppo.models.loading import frozen, load_tokenizer
    from srppo.scoring.rewards import RewardNormalizer

    shape = ppo_setup(quick, "grpo")
    dev, dt = torch.device("cpu"), torch.float32
    bf16 = use_precision("auto") is not None  # the reward's forwards too, as srppo's run does
    torch.manual_seed(0)
    tok = load_tokenizer(SFT_DIR)
    records = [r for batch in bench_prompts(shape["iterations"], shape["prompts_per_iter"]) for r in batch]
    data = Dataset.from_list([{"prompt": r["messages"]} for r in records])
    reward = coherent_reward_fn(tok, frozen(SFT_DIR, dev, dt), frozen(BASE_DIR, dev, dt),
                                RewardNormalizer.from_dict(read_json(NORM)), shape["max_new_tokens"])
    with tempfile.TemporaryDirectory(prefix="srppo-trl-") as tmp:
        trainer = GRPOTrainer(model=str(SFT_DIR), reward_funcs=reward, args=grpo_config(shape, tmp, bf16),
                              train_dataset=data, processing_class=tok)
        trainer.model.float()
        phases, rows = _instrument(trainer, reward)
        trainer.train()
    rows = _iterations(rows, shape["buffer"] // shape["mini_batch_size"])
    return {**shape, "trl": trl_version, "bf16": bf16, "params": n_params(trainer.model), "warmup": rows[0], "iters": rows[1:],
            **summarise(rows[1:])}


def _instrument(trainer, reward) -> tuple[dict, list]:
    """Time TRL's phases from outside: generation (`_generate`), the reward (our function: the p_SFT and
    p_PT forwards), everything `_generate_and_score_completions` adds (the reference model's and the
    old policy's forwards), and each optimizer step (training_step minus the generation it triggers)."""
    phases: dict[str, float] = {}
    steps: list[dict] = []
    trainer._generate = _timed(trainer._generate, phases, "generate")
    reward_timed = _timed(reward, phases, "score")
    reward_timed.__name__ = reward.__name__
    trainer.reward_funcs[0] = reward_timed
    inner = trainer._generate_and_score_completions

    def gen_and_score(inputs):
        t = time.perf_counter()
        out = inner(inputs)
        phases["experience"] = time.perf_counter() - t
        # tokens forwarded per rollout: prompt + completion, no padding (srppo's attention-mask count)
        phases["tokens"] = float(out["prompt_mask"].sum() + out["completion_mask"].sum())
        phases["response_tokens"] = float(out["completion_mask"].sum())
        return out
    trainer._generate_and_score_completions = gen_and_score
    step = trainer.training_step

    def training_step(*args, **kwargs):
        phases.clear()
        t = time.perf_counter()
        out = step(*args, **kwargs)
        steps.append({"seconds": time.perf_counter() - t, **phases})
        return out
    trainer.training_step = training_step
    return phases, steps


def _iterations(steps: list[dict], per_gen: int) -> list[dict]:
    """Group optimizer steps into iterations (one generation + `per_gen` steps), srppo's row layout."""
    rows = []
    for k in range(0, len(steps), per_gen):
        first, seconds = steps[k], sum(s["seconds"] for s in steps[k:k + per_gen])
        gen, sc, exp = first.get("generate", 0.0), first.get("score", 0.0), first.get("experience", 0.0)
        rows.append({"seconds": seconds, "tokens": first["tokens"], "response_tokens": first["response_tokens"],
                     "tokens_per_s": first["tokens"] / seconds, "generate": gen, "score": sc,
                     "actor_critic_forward": exp - gen - sc, "train_actor": seconds - exp, "train_critic": 0.0,
                     "train": seconds - exp})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    t = time.perf_counter()
    result = run(a.quick)
    result.update(machine=machine(), wall_s=time.perf_counter() - t)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
