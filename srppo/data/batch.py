"""Chat-template encoding and right-padded batches with response (action) masks.

Every forward in the pipeline sees the same layout: `[prompt | response | pad]`, right-padded, so
positions are plain `arange` and log-probs line up across the actor, critic, SFT and PT models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def encode_prompt(tok, messages: list[dict]) -> list[int]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_response(tok, messages: list[dict], response: str, prompt_ids: list[int]) -> list[int]:
    """Response tokens as the template writes them, ending with (and cut after) the EOS token."""
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=True)
    if hasattr(full, "keys"):
        full = full["input_ids"]
    full = list(full)
    if full[: len(prompt_ids)] == prompt_ids:
        resp = full[len(prompt_ids):]
    else:  # template re-renders the prompt differently once an answer follows: tokenize the answer alone
        resp = tok(response, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    if eos in resp:
        resp = resp[: resp.index(eos) + 1]  # drop what the template adds after EOS (e.g. a newline)
    else:
        resp = resp + [eos]
    return resp


@dataclass
class Batch:
    input_ids: torch.Tensor       # (B, T) right-padded prompt+response
    attention_mask: torch.Tensor  # (B, T)
    action_mask: torch.Tensor     # (B, T-1): 1 where input_ids[:, 1:] is a response token
    first_action: int             # smallest prompt length - 1: logits before it are never needed

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.action_mask.to(device),
                     self.first_action)


def select_rows(batch: Batch, idx: torch.Tensor) -> Batch:
    """Rows `idx` of a batch, cut to the longest of them: with right padding the columns past it hold only
    padding, and a forward costs in proportion to the width. Tensors laid out like `action_mask`
    (B, T-1) line up with the result after `[:, :width - 1]`."""
    attn = batch.attention_mask[idx]
    width = max(int(attn.sum(-1).max()), 2) if len(idx) else batch.input_ids.shape[1]
    action = batch.action_mask[idx][:, : width - 1]
    acting = action.any(0).nonzero()
    first = int(acting[0]) if len(acting) else min(batch.first_action, width - 2)  # this subset's shortest prompt
    return Batch(batch.input_ids[idx][:, :width], attn[:, :width], action, max(batch.first_action, first))


def collate(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> Batch:
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    T = max(lengths)
    B = len(prompts)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    action = torch.zeros((B, T - 1), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attention[i, : len(p) + len(r)] = 1
        action[i, len(p) - 1 : len(p) + len(r) - 1] = 1.0  # logits at t predict token t+1
    first = min(len(p) for p in prompts) - 1
    return Batch(input_ids, attention, action, first)


@dataclass
class PackedBatch:
    """A right-padded batch's rows laid end to end in one sequence, the padding left out.

    `position_ids` restart at 0 with every row, and a transformers forward given them without an attention
    mask keeps each row's attention inside the row (it builds that block-diagonal causal mask from where the
    positions restart), so every row computes what it computes padded. `rows`/`cols` place each packed token
    back in the padded layout."""
    input_ids: torch.Tensor     # (1, N): every row's real tokens, row after row
    position_ids: torch.Tensor  # (1, N): 0 .. len(row) - 1 for each row
    rows: torch.Tensor          # (N,): the padded batch's row of each packed token
    cols: torch.Tensor          # (N,): and its column


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedBatch:
    rows, cols = attention_mask.bool().nonzero(as_tuple=True)  # row-major: each row's tokens in order
    return PackedBatch(input_ids[rows, cols][None], cols[None], rows, cols)
