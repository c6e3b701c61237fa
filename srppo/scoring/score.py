"""Scoring sampled responses with the frozen roles: p_SFT's log-probs (the KL reference) and the reward.

`p_SFT` plays two roles here and is run once: its log-probs are the KL reference *and* the numerator
of the coherent reward. Used by calibrate, rollouts, the data filter and PPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from srppo.data.batch import Batch, collate, select_rows
from srppo.models.logprobs import shared_prompt_logprobs, token_logprobs
from srppo.runtime import distributed
from srppo.rollout.engine import Generation
from srppo.scoring.reward_model import reward_scores
from srppo.scoring.rewards import coherent_reward


@dataclass
class Scored:
    """Responses scored by the frozen roles: what the `rollouts` stage stores and PPO re-uses."""

    batch: Batch
    logp_sft: torch.Tensor    # (B, T-1) log p_SFT of each response token, 0 elsewhere
    logp_pt: torch.Tensor     # (B, T-1) log p_PT (zeros under a reward model)
    reward_raw: torch.Tensor  # (B,) coherent reward, Eq. (3), or the reward model's score
    truncated: torch.Tensor   # (B,) bool: no EOS within the token budget


def in_chunks(fn, batch: Batch, rows: int | None) -> torch.Tensor:
    """`fn(batch)` over chunks of `rows` rows, concatenated in the batch's row order.

    A 1024-rollout buffer with 1024-token responses and a 128k vocabulary would need over a TiB of
    logits in one forward; chunks keep that to `rows` sequences at a time. Rows are chunked in order
    of length and each chunk is cut to its longest row (`select_rows`), so short sequences do not pay
    for the longest one's padding. `fn` returns (rows,) or (rows, width - 1) tensors.

    Under several processes every rank holds the same batch: each computes its share of the rows
    (`distributed.gather_rows`) and the shares are gathered, so N ranks score a buffer N times faster and
    every rank ends with the whole result.
    """
    if distributed.world_size() > 1:
        return distributed.gather_rows(lambda idx: _in_chunks(fn, select_rows(batch, idx), rows, batch.input_ids.shape[1]),
                                       batch.attention_mask.sum(-1))
    return _in_chunks(fn, batch, rows)


def _in_chunks(fn, batch: Batch, rows: int | None, width: int | None = None) -> torch.Tensor:
    """in_chunks in one process; (rows, `width` - 1) results padded to `width` (default: the batch's)."""
    n, own = batch.input_ids.shape
    width = width or own
    if not rows or rows >= n:
        out = fn(batch)
        return torch.nn.functional.pad(out, (0, width - 1 - out.shape[1])) if out.dim() == 2 else out
    order = torch.argsort(batch.attention_mask.sum(-1), stable=True)
    parts = []
    for chunk in order.split(rows):
        out = fn(select_rows(batch, chunk))
        if out.dim() == 2:  # (rows, chunk width - 1) -> the whole batch's width
            out = torch.nn.functional.pad(out, (0, width - 1 - out.shape[1]))
        parts.append(out)
    result = torch.cat(parts)
    return result[torch.argsort(order)]  # back to the batch's row order


@torch.no_grad()
def engine_logprobs(gens: list[Generation], like: torch.Tensor) -> torch.Tensor | None:
    """The engine's log-prob of each sampled token laid out like `like` (B, T-1); None if it gave none."""
    if any(g.logprobs is None for g in gens):
        return None
    out = torch.zeros_like(like)
    for i, g in enumerate(gens):
        start = len(g.prompt_ids) - 1  # position whose logits predict the first response token
        out[i, start : start + len(g.logprobs)] = torch.tensor(g.logprobs, dtype=out.dtype)
    return out


def recorded_logprobs_are_the_models(engine, sampling) -> bool:
    """Whether the log-probs `engine` records while sampling with `sampling` are its model's own: an engine
    that samples from the trainer's fp32 model (hf) at temperature 1 without top-p. vLLM's kernels and
    dtype differ, and temperature or top-p reshape the distribution the recorded log-probs are from."""
    return (getattr(engine, "logprobs_match_trainer", False) and not sampling.greedy
            and sampling.temperature == 1.0 and sampling.top_p >= 1.0)


def score(gens: list[Generation], sft, pt, pad_id: int, device, chunk: int | None = None,
          reward_model=None, sampled_by_sft: bool = False) -> Scored:
    """p_SFT's log-probs (the KL reference) and the reward: coherent (p_SFT, p_PT) or, given a
    `reward_model` (the RM-PPO baseline), its score at the last token; then p_PT is not run.

    `sampled_by_sft`: the generations are p_SFT's own samples and the engine recorded the model's own
    log-probs for them (`recorded_logprobs_are_the_models`): those are p_SFT's log-probs, and its forward
    is spared (the rollouts, calibrate and diagnose stages score p_SFT's samples)."""
    prompts, responses = [g.prompt_ids for g in gens], [g.response_ids for g in gens]
    batch = collate(prompts, responses, pad_id).to(device)
    if len({tuple(p) for p in prompts}) < len(prompts):  # groups: each distinct prompt runs once
        frozen_logprobs = lambda model: shared_prompt_logprobs(model, prompts, responses, batch, pad_id, chunk)
    else:
        frozen_logprobs = lambda model: in_chunks(lambda b: token_logprobs(model, b), batch, chunk)
    recorded = engine_logprobs(gens, batch.action_mask.float()) if sampled_by_sft else None
    logp_sft = recorded * batch.action_mask if recorded is not None else frozen_logprobs(sft)
    if reward_model is None:
        logp_pt = frozen_logprobs(pt)
        reward = coherent_reward(logp_sft, logp_pt, batch.action_mask)
    else:
        logp_pt = torch.zeros_like(logp_sft)
        reward = in_chunks(lambda b: reward_scores(reward_model, b), batch, chunk)
    truncated = torch.tensor([g.truncated for g in gens], device=device)
    return Scored(batch, logp_sft, logp_pt, reward, truncated)
