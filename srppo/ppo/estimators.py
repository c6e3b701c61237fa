"""Advantage estimators in a registry: one signature, looked up by name (verl-style).

Each takes per-token rewards and values on the response positions and returns (advantages, returns),
all (B, T) and zero outside `mask`.
"""

from __future__ import annotations

from typing import Callable

import torch

Estimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
_REGISTRY: dict[str, Estimator] = {}


def register_estimator(name: str):
    def wrap(fn: Estimator) -> Estimator:
        if name in _REGISTRY:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn
    return wrap


def get_estimator(name: str) -> Estimator:
    if name not in _REGISTRY:
        raise KeyError(f"unknown advantage estimator '{name}'; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


@register_estimator("gae")
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (5): A_t = sum_l (gamma*lam)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t).

    Positions outside `mask` (prompt, padding) are skipped: the state after the last response token
    is absorbing (EOS) or cut off (truncation), so its value is 0.
    """
    B, T = rewards.shape
    rewards, values = rewards * mask, values * mask
    adv = torch.zeros_like(rewards)
    last_gae = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        gae_t = delta + gamma * lam * last_gae
        # Outside the response, carry the running values through unchanged (left/right padding).
        adv[:, t] = gae_t * m
        last_gae = torch.where(m > 0, gae_t, last_gae)
        next_value = torch.where(m > 0, values[:, t], next_value)
    returns = (adv + values) * mask
    return adv, returns
