"""Per-token log-probabilities of a batch under a causal LM, computed only where they are needed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from srppo.data.chat import Batch


def token_logprobs(model, batch: Batch, with_entropy: bool = False, temperature: float = 1.0):
    """log p(x_{t+1} | x_{<=t}) for t >= batch.first_action, zero-filled before it.

    Returns logp (B, T-1) and, if asked, the per-token entropy (B, T-1) of the same distributions.
    `temperature` scales the logits as sampling did: the actor's ratio must use the distribution the
    responses were drawn from (a silent mismatch otherwise whenever rollouts.temperature != 1).
    The LM head runs only on the suffix that holds responses (`logits_to_keep`): on a 135M model the
    head is ~20 % of the FLOPs and prompts are most of the sequence.
    """
    B, T = batch.input_ids.shape
    keep = T - batch.first_action  # positions first_action .. T-1 (the last predicts nothing)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep)
    logits = out.logits[:, :-1].float()  # (B, keep-1, V) predicting tokens first_action+1 .. T-1
    del out  # the logits are the largest tensor here: keep no second reference to them
    if temperature != 1.0:
        logits = logits / temperature
    if with_entropy:
        with torch.no_grad():  # one row at a time: p * log p over the vocabulary is as large as the logits
            ent_suffix = torch.stack([-(row.softmax(-1) * row.log_softmax(-1)).sum(-1) for row in logits])
    labels = batch.input_ids[:, batch.first_action + 1 :]  # (B, keep-1)
    # cross_entropy keeps only its log-softmax for backward: the logits are freed on return
    logp_suffix = -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, keep-1)
    del logits
    logp = logp_suffix.new_zeros(B, T - 1)
    logp[:, batch.first_action :] = logp_suffix
    logp = logp * batch.action_mask
    if not with_entropy:
        return logp
    ent = logp.new_zeros(B, T - 1)
    ent[:, batch.first_action :] = ent_suffix
    return logp, ent * batch.action_mask


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (logp * mask).sum(-1)  # (B,)
