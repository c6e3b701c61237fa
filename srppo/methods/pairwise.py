"""The training loop shared by the pairwise baselines (SPIN's DPO loss, the reward model's
Bradley-Terry loss): seeded shuffled epochs over pairs, a finite-loss guard, clipping, one step, numeric health."""

from __future__ import annotations

import random
from typing import Callable

import torch

from srppo.runtime import health


def pair_epochs(model, optimizer, n_pairs: int, cfg, seed: int,
                loss_of: Callable[[list[int]], tuple[torch.Tensor, dict]], name: str,
                on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """`cfg.epochs` passes of `cfg.batch_size` pair indices; `loss_of(indices)` -> (loss, metrics).

    Numeric health as in sft (srppo.runtime.health): each step's loss and gradient norm finite and the loss
    within LOSS_BLOWUP of the first step's, every weight finite after the last update; else DivergenceError
    naming the step, before anything is saved."""
    rng = random.Random(seed)
    history = []
    advice = f"Lower {name}.lr."
    model.train()
    for _ in range(cfg.epochs):
        order = list(range(n_pairs))
        rng.shuffle(order)
        for s in range(0, n_pairs, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss, metrics = loss_of(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name} loss is {loss.item()} on pairs {idx}; lower {name}.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
            optimizer.step()
            step = len(history) + 1
            health.check_finite(name, step, advice, grad_norm=metrics["grad_norm"])
            first = history[0] if history else metrics
            key = next(k for k in metrics if k.endswith("_loss"))  # spin_loss, rm_loss
            health.check_blowup(name, step, key, metrics[key], first[key], advice)
            history.append(metrics)
            if on_step:
                on_step(metrics)
    if history:
        health.check_parameters(name, len(history), model, "the model", advice)
    return history
