"""Packed forwards: a batch's rows end to end in one sequence, so no forward computes padding.

Rows of a right-padded batch differ in length, and a padded forward is as wide as its longest row: on the
embedded default 30 % of an SFT micro-batch's tokens are padding, 15 % of a length-grouped PPO mini-batch's.
Packed (srppo.data.batch.pack), each row keeps its own position ids and, with no attention mask given,
transformers keeps each row's attention inside the row, so a row computes what it computes padded (up to
float rounding) and the results go back to the padded layout. Where the packed forward pays, the LM head
also runs only at the positions that predict a response token.

`runtime.packing` is a process setting, like the precision: `setup_runtime` sets it once per stage. Before a
model's first packed forward, `keeps_rows_apart` checks that its attention really reads the restarting
positions (a model with mask code of its own, or transformers before 4.54, lets each row see the rows before
it); a model that fails is run padded, with a log line. A model whose weights ZeRO-3 partitions never packs:
its forwards run in lockstep on every rank, and whether a batch packs depends on each rank's own rows.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch

from srppo.data.batch import pack
from srppo.runtime.precision import autocast
from srppo.runtime.stage import log

_setting = {"on": False}  # off until a stage's setup_runtime reads runtime.packing (tests pack when they ask)
_checked: WeakKeyDictionary = WeakKeyDictionary()  # model -> whether it keeps packed rows apart


# Pack only where it pays. The packed row attends over its whole length (a block-diagonal mask, computed in
# full by the eager kernel), so its attention grows with the square of all rows' tokens together: on 2 CPU cores
# an SFT micro-batch of 8 demonstrations (430 real tokens, 30 % padding) ran a step 1.3x faster packed, while PPO's
# length-grouped mini-batches (480 tokens, 15 % padding) were no faster and the critic's values over a 16-row
# buffer (1,000 tokens) 1.4x slower.
MAX_PACKED = 512    # real tokens of the batch, at most
MIN_PADDING = 0.25  # share of the padded batch that is padding, at least


def set_packing(on: bool) -> None:
    _setting["on"] = bool(on)


def packing() -> bool:
    return _setting["on"]


def packs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
    """Whether this forward runs packed: packing on, enough padding to save in a batch short enough to pay
    (MIN_PADDING, MAX_PACKED), and `model` keeps rows apart (checked once per model, on the two longest rows of
    the first batch it packs)."""
    if not _setting["on"] or attention_mask.shape[0] < 2:
        return False
    real = int(attention_mask.sum())
    if real > MAX_PACKED or real > (1 - MIN_PADDING) * attention_mask.numel():
        return False
    if model not in _checked and _partitioned(model):
        _checked[model] = False  # ZeRO-3: the check's extra forwards would break the ranks' lockstep
    if model not in _checked:
        lengths = attention_mask.sum(-1)
        a, b = (input_ids[r, : int(lengths[r])].tolist() for r in lengths.argsort(descending=True)[:2].tolist())
        _checked[model] = keeps_rows_apart(model, a, b, input_ids.device)
    return _checked[model]


def _partitioned(model) -> bool:
    """Whether ZeRO-3 partitions `model`'s weights: its forwards gather them from every rank, so all ranks must
    run the same forwards, and whether a batch packs depends on this rank's rows."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def keeps_rows_apart(model, a: list[int], b: list[int], device) -> bool:
    """Whether `model` (a causal LM or a decoder body; its first output is compared) keeps packed rows apart.

    Two rows of token ids, A and B: B's outputs packed after A must equal them packed after A' (A's length,
    other tokens) within 1e-3 of their scale, and B's outputs alone within 2 % of the scale on average (bf16
    rounds differently at another width). Run under the process's autocast, as the forwards will be."""
    other = [(t + 1) % (max(a + b) + 1) for t in a]

    def packed_b(first):
        ids = torch.tensor([first + b], device=device)
        pos = torch.tensor([list(range(len(first))) + list(range(len(b)))], device=device)
        return model(input_ids=ids, position_ids=pos)[0][0, len(first):].float()

    with torch.no_grad(), autocast(device):  # as the forwards will run
        after_a, after_other = packed_b(a), packed_b(other)
        alone = model(input_ids=torch.tensor([b], device=device))[0][0].float()
    scale = float(alone.abs().max()) or 1.0
    leak = float((after_a - after_other).abs().max()) / scale
    gap = float((after_a - alone).abs().mean()) / scale
    if leak > 1e-3 or gap > 0.02:
        log("packing", f"{type(model).__name__}: its attention does not keep packed rows apart (a row's outputs move "
                       f"by {leak:.2g} of their scale with the row before it, and differ by {gap:.2g} on average "
                       f"from the row alone); its forwards run padded")
        return False
    return True


def packed_outputs(forward, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor | None = None):
    """`forward(packed, keep_positions)` on the packed rows, whose outputs (n, ...) sit at the packed positions
    `keep` selects from the padded layout (a (B, T) bool mask; None: every real token); returns the outputs and
    their (rows, cols) in the padded layout."""
    packed = pack(input_ids, attention_mask)
    if keep is None:
        where = torch.arange(packed.rows.numel(), device=input_ids.device)
    else:
        where = keep[packed.rows, packed.cols].nonzero().squeeze(1)
    return forward(packed, where), packed.rows[where], packed.cols[where]
