"""Per-token log-probabilities of a batch under a causal LM, computed only where they are needed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from srppo.data.batch import Batch
from srppo.models.packing import packed_outputs, packs
from srppo.runtime.precision import autocast


def token_logprobs(model, batch: Batch, with_entropy: bool = False, temperature: float = 1.0):
    """log p(x_{t+1} | x_{<=t}) for t >= batch.first_action, zero-filled before it.

    Returns logp (B, T-1) and, if asked, the per-token entropy (B, T-1) of the same distributions.
    `temperature` scales the logits as sampling did: the actor's ratio must use the distribution the
    responses were drawn from (a silent mismatch otherwise whenever rollouts.temperature != 1).
    The LM head runs only on the suffix that holds responses (`logits_to_keep`): on a 135M model the
    head is ~20 % of the FLOPs and prompts are most of the sequence.
    """
    if packs(model, batch.input_ids, batch.attention_mask):  # runtime.packing: no padding computed
        return _packed_token_logprobs(model, batch, with_entropy, temperature)
    B, T = batch.input_ids.shape
    keep = T - batch.first_action  # positions first_action .. T-1 (the last predicts nothing)
    with autocast(batch.input_ids.device):  # bf16 matmuls where the chip has the units; logits upcast below
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


def _packed_token_logprobs(model, batch: Batch, with_entropy: bool, temperature: float):
    """token_logprobs on the batch's rows packed (srppo.models.packing): the LM head runs only where a logit
    predicts a response token, and the results go back to the padded layout."""
    B, T = batch.input_ids.shape
    acting = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    acting[:, :-1] = batch.action_mask.bool()  # positions whose next token is a response token

    def forward(packed, where):
        with autocast(batch.input_ids.device):
            out = model(input_ids=packed.input_ids, position_ids=packed.position_ids, logits_to_keep=where)
        return out.logits[0].float(), packed.input_ids[0, where + 1]

    (logits, labels), rows, cols = packed_outputs(forward, batch.input_ids, batch.attention_mask, acting)
    if temperature != 1.0:
        logits = logits / temperature
    if with_entropy:
        with torch.no_grad():  # a few hundred rows at a time: p * log p over the vocabulary is as large as the logits
            ent_k = torch.cat([-(c.softmax(-1) * c.log_softmax(-1)).sum(-1) for c in logits.split(256)])
    logp_k = -F.cross_entropy(logits, labels, reduction="none")
    del logits
    logp = logp_k.new_zeros(B, T - 1).index_put((rows, cols), logp_k) * batch.action_mask
    if not with_entropy:
        return logp
    return logp, ent_k.new_zeros(B, T - 1).index_put((rows, cols), ent_k) * batch.action_mask


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (logp * mask).sum(-1)  # (B,)


@torch.no_grad()
def shared_prompt_logprobs(model, prompts: list[list[int]], responses: list[list[int]], batch: Batch,
                           pad_id: int, rows: int | None = None) -> torch.Tensor:
    """`token_logprobs(model, batch)` for a frozen model when prompts repeat (GRPO/RLOO groups sample
    each prompt group_size times): each distinct prompt runs once, its key/value cache is copied to
    the rows that share it, and only the responses run per row. With 4 samples of a 40-token prompt
    and 20-token responses that is half the tokens. `batch` is `collate(prompts, responses)`;
    `rows` bounds the rows per forward as in `in_chunks`.
    """
    owner: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        owner.setdefault(tuple(p), []).append(i)
    out = torch.zeros(batch.action_mask.shape, device=batch.input_ids.device)
    chunk: list[list[int]] = []
    for members in list(owner.values()) + [None]:  # None flushes the last chunk
        if chunk and (members is None or (rows and sum(map(len, chunk)) + len(members) > rows)):
            _score_chunk(model, prompts, responses, chunk, pad_id, out)
            chunk = []
        if members is not None:
            chunk.append(members)
    return out * batch.action_mask


def _score_chunk(model, prompts, responses, groups: list[list[int]], pad_id: int, out: torch.Tensor) -> None:
    device = out.device
    heads = [prompts[g[0]] for g in groups]
    P = max(map(len, heads))
    ids = torch.full((len(heads), P), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros_like(ids)
    for u, p in enumerate(heads):  # left padding: every prompt ends at column P-1
        ids[u, P - len(p):] = torch.tensor(p, device=device)
        attn[u, P - len(p):] = 1
    with autocast(device):
        first = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                      use_cache=True, logits_to_keep=1)
    row_ids = [i for g in groups for i in g]
    sel = torch.tensor([u for u, g in enumerate(groups) for _ in g], device=device)
    first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)[sel]  # predicts response token 0
    R = max(len(responses[i]) for i in row_ids)
    resp = torch.full((len(row_ids), R), pad_id, dtype=torch.long, device=device)
    for k, i in enumerate(row_ids):
        resp[k, : len(responses[i])] = torch.tensor(responses[i], device=device)
    logp = first_logp.gather(1, resp[:, :1])  # (n, 1)
    if R > 1:  # the responses' own tokens, but the last (it predicts nothing), on top of the prompt cache
        cache = first.past_key_values
        cache.reorder_cache(sel)
        resp_attn = (torch.arange(R - 1, device=device) < torch.tensor(
            [len(responses[i]) for i in row_ids], device=device)[:, None]).long()
        with autocast(device):
            rest = model(input_ids=resp[:, :-1], attention_mask=torch.cat([attn[sel], resp_attn], dim=1),
                         position_ids=attn[sel].sum(-1, keepdim=True) + torch.arange(R - 1, device=device),
                         past_key_values=cache, use_cache=False).logits.float()
        logp = torch.cat([logp, -F.cross_entropy(rest.transpose(1, 2), resp[:, 1:], reduction="none")], dim=1)
    for k, i in enumerate(row_ids):  # into collate's layout: logits at t predict token t+1
        start, n = len(prompts[i]) - 1, len(responses[i])
        out[i, start : start + n] = logp[k, :n]
