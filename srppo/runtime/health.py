"""Numeric health of a training run: the checks that keep a diverged model from being saved as a result.

Every training stage (sft, ppo and the baselines that train: spin, the reward model) runs them on each
step (the loss and the gradient norm finite, the loss not blown up against the run's first step) and after
its last update (every parameter finite, and a probe forward of the final model finite and not blown up).
A failed check raises `DivergenceError` naming the stage, the step and the quantity, before the stage
writes any output: a run that diverged fails, it is never cached as a result.

Why after the last update too: a check before each step sees the damage of step t only at step t+1, so
the last step's damage (one step at `sft.lr: 1e39` turns every weight to inf) would otherwise be saved.
"""

from __future__ import annotations

import math

import torch

# A token-mean loss has blown up past this many times the run's first-step loss (taken as at least 1 nat), or
# past twice a uniform guess over the vocabulary (2 ln V nats), whichever is lower: a healthy run's loss falls,
# and batch-to-batch spread stays within a few times. `sft.lr: 100` took the 135M model from 2.39 to 790,848.
LOSS_BLOWUP = 10.0

# A response of at least REPEAT_MIN_TOKENS tokens whose distinct 3-grams are under REPEAT_DISTINCT of its
# 3-grams is degenerate ("givinggivinggiving..."): p_SFT's own samples on the testbed are near 1.0.
REPEAT_MIN_TOKENS = 16
REPEAT_DISTINCT = 0.3


class DivergenceError(RuntimeError):
    """A training run diverged; the message names the stage, the step and the quantity."""


def fail(stage: str, step: int | str, what: str, advice: str) -> DivergenceError:
    return DivergenceError(f"{stage}: diverged at step {step}: {what}; nothing was saved. {advice}")


def check_finite(stage: str, step: int, advice: str, **values: float | None) -> None:
    """Each named scalar (loss, gradient norm, KL...) is finite; None values are skipped."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise fail(stage, step, f"{name} is {value}", advice)


def loss_limit(first: float, vocab_size: int | None = None) -> float:
    """The highest token-mean loss (nats) a healthy run reaches, given its first step's (LOSS_BLOWUP)."""
    limit = LOSS_BLOWUP * max(first, 1.0)
    return min(limit, 2 * math.log(vocab_size)) if vocab_size and vocab_size > 1 else limit


def check_blowup(stage: str, step: int, name: str, value: float, first: float, advice: str,
                 vocab_size: int | None = None) -> None:
    """`value` (a token-mean loss) within `loss_limit` of the run's first step's."""
    limit = loss_limit(first, vocab_size)
    if value > limit:
        raise fail(stage, step, f"{name} {value:.4g} is over {limit:.3g} (the first step's {first:.4g}: "
                   f"{LOSS_BLOWUP:g}x that, or twice a uniform guess over the vocabulary, whichever is lower)", advice)


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an inf."""
    with torch.no_grad():
        return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]


def check_parameters(stage: str, step: int, model: torch.nn.Module, what: str, advice: str) -> None:
    """Every parameter of `model` (`what`: 'the model', 'the critic'...) finite after its last update."""
    bad = nonfinite_parameters(model)
    if bad:
        total = sum(1 for _ in model.parameters())
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise fail(stage, step, f"{len(bad)} of {total} parameter tensors of {what} hold NaN/inf ({shown})", advice)


def repetitive(token_ids: list[int]) -> bool:
    """A long response made of a few 3-grams over and over (see REPEAT_DISTINCT)."""
    if len(token_ids) < REPEAT_MIN_TOKENS:
        return False
    grams = list(zip(token_ids, token_ids[1:], token_ids[2:]))
    return len(set(grams)) < REPEAT_DISTINCT * len(grams)


def repetitive_share(responses: list[list[int]]) -> float:
    """The share of `responses` that are `repetitive`."""
    return sum(map(repetitive, responses)) / max(len(responses), 1)
