"""p_SFT's rollout buffers before PPO: `make_rollouts` is the `rollouts` stage's one library call.

p_SFT samples its own share of the PPO prompts (`warmup_prompt_split`: drawn with the run's seed and never
used by PPO's iterations; cycled when the pool is too small), the frozen roles score every sample (the
coherent reward, or the reward model's score), and each buffer is written as parquet
(srppo/scoring/buffer.py). They are the critic's warm-up data (the last one held out when
`rollouts.n_buffers` exceeds `ppo.critic_warmup_buffers`) and a browsable record of what p_SFT does before PPO.
"""

from __future__ import annotations

import random
from pathlib import Path

from srppo.data.records import read_jsonl
from srppo.io import atomic_dir
from srppo.models.loading import context_length, frozen, load_tokenizer
from srppo.rollout.sampling import prompt_ids, rollout_engine, sampling_params
from srppo.runtime.stage import Timer, log, progress
from srppo.scoring.buffer import buffer_path, to_frame
from srppo.scoring.reward_model import reward_model_or_none
from srppo.scoring.score import recorded_logprobs_are_the_models, score


def warmup_prompt_split(n_prompts: int, seed: int, need: int, ppo_batch: int) -> tuple[list[int], list[int]]:
    """Indices of the prompts reserved for the critic's warm-up (in sampling order) and of those left for
    PPO's iterations: disjoint, so the critic is never warmed up on the prompts PPO then trains on.

    The warm-up gets up to `need` prompts (its rollouts, one each), leaving PPO at least one batch of
    `ppo_batch`; the `rollouts` stage and the `ppo` stage call this with the same arguments.
    """
    order = list(range(n_prompts))
    random.Random(f"srppo-warmup/{seed}").shuffle(order)
    reserved = max(0, min(need, n_prompts - ppo_batch))
    return order[:reserved], sorted(order[reserved:])


def make_rollouts(params, base_dir: str | Path, sft_dir: str | Path, prompts_path: str | Path,
                  out_dir: str | Path, device, dtype, *, timer: Timer | None = None) -> list[dict]:
    """`rollouts.n_buffers` buffers of `rollouts.buffer_size` scored p_SFT samples in `out_dir`, written whole
    or not at all (`buffer_NNN.parquet`); returns each buffer's reward mean, length mean and EOS rate.

    `timer` gets one phase per buffer (a fresh "rollouts" one if None).
    """
    cfg = params.rollouts
    timer = timer or Timer("rollouts")
    tok = load_tokenizer(sft_dir)
    rm = reward_model_or_none(params.reward, device, dtype)
    sft, pt = frozen(sft_dir, device, dtype), None if rm else frozen(base_dir, device, dtype)
    records = read_jsonl(prompts_path)
    prompt_ids(tok, records, prompts_path, cfg.max_new_tokens, context_length(sft_dir))  # fail before sampling
    need = cfg.n_buffers * cfg.buffer_size
    engine = rollout_engine(cfg, sft, tok, sft_dir, params.runtime.seed, dtype, tokens=need * cfg.max_new_tokens)
    warmup, _ = warmup_prompt_split(len(records), params.runtime.seed, need, cfg.buffer_size // params.ppo.group_size)
    if len(warmup) < need:
        log("rollouts", f"warning: {prompts_path}: {len(records)} prompts leave the warm-up {len(warmup)} of its own "
            f"for {need} rollouts; its buffers repeat prompts{'' if warmup else ' and share them with PPO'}")
    warmup = warmup or list(range(len(records)))
    records = [records[i] for i in (warmup * (need // len(warmup) + 1))[:need]]  # cycle a small set
    summary, sampling = [], sampling_params(cfg)
    with atomic_dir(out_dir) as tmp, progress(need, "rollouts") as bar:
        for b in range(cfg.n_buffers):
            items = records[b * cfg.buffer_size : (b + 1) * cfg.buffer_size]
            with timer.phase(f"buffer {b}"):
                gens = engine.generate(prompt_ids(tok, items), sampling, progress=bar)
                scored = score(gens, sft, pt, tok.pad_token_id, device, cfg.score_batch_size, rm,
                               sampled_by_sft=recorded_logprobs_are_the_models(engine, sampling))
                frame = to_frame(scored, gens, items, tok, b)
                frame.to_parquet(buffer_path(tmp, b), index=False)
            summary.append({"buffer": b, "reward_mean": float(frame.reward_raw.mean()),
                            "length_mean": float(frame.length.mean()),
                            "eos_rate": float(1 - frame.truncated.mean())})
            log("rollouts", f"buffer {b}: reward {summary[-1]['reward_mean']:.2f}, "
                f"length {summary[-1]['length_mean']:.1f}")
    engine.close()
    return summary
