"""p_SFT's rollout buffers before PPO: `make_rollouts` is the `rollouts` stage's one library call.

p_SFT samples the PPO prompts (shuffled with the run's seed, cycled when there are fewer than the buffers
need), the frozen roles score every sample (the coherent reward, or the reward model's score), and each
buffer is written as parquet (srppo/scoring/buffer.py). They are the critic's warm-up data and a
browsable record of what p_SFT does before PPO.
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
from srppo.scoring.score import score


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
    engine = rollout_engine(cfg, sft, tok, sft_dir, params.runtime.seed, dtype)
    records = read_jsonl(prompts_path)
    prompt_ids(tok, records, prompts_path, cfg.max_new_tokens, context_length(sft_dir))  # fail before sampling
    random.Random(params.runtime.seed).shuffle(records)
    need = cfg.n_buffers * cfg.buffer_size
    records = (records * (need // len(records) + 1))[:need]  # cycle a small prompt set
    summary = []
    with atomic_dir(out_dir) as tmp, progress(need, "rollouts") as bar:
        for b in range(cfg.n_buffers):
            items = records[b * cfg.buffer_size : (b + 1) * cfg.buffer_size]
            with timer.phase(f"buffer {b}"):
                gens = engine.generate(prompt_ids(tok, items), sampling_params(cfg), progress=bar)
                scored = score(gens, sft, pt, tok.pad_token_id, device, cfg.score_batch_size, rm)
                frame = to_frame(scored, gens, items, tok, b)
                frame.to_parquet(buffer_path(tmp, b), index=False)
            summary.append({"buffer": b, "reward_mean": float(frame.reward_raw.mean()),
                            "length_mean": float(frame.length.mean()),
                            "eos_rate": float(1 - frame.truncated.mean())})
            log("rollouts", f"buffer {b}: reward {summary[-1]['reward_mean']:.2f}, "
                f"length {summary[-1]['length_mean']:.1f}")
    engine.close()
    return summary
