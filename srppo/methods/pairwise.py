"""The training loop shared by the pairwise baselines (SPIN's DPO loss, the reward model's
Bradley-Terry loss): seeded shuffled epochs over pairs, a finite-loss guard, clipping, one step."""

from __future__ import annotations

import random
from typing import Callable

import torch


def pair_epochs(model, optimizer, n_pairs: int, cfg, seed: int,
                loss_of: Callable[[list[int]], tuple[torch.Tensor, dict]], name: str,
                on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """`cfg.epochs` passes of `cfg.batch_size` pair indices; `loss_of(indices)` -> (loss, metrics)."""
    rng = random.Random(seed)
    history = []
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
            history.append(metrics)
            if on_step:
                on_step(metrics)
    return history
