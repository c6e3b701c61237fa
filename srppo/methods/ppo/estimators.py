"""Advantage estimators in a registry: one signature, looked up by name (verl-style).

Every estimator is called as

    fn(rewards, values, mask, gamma, lam, *, groups=None, norm_std=True) -> (advantages, returns)

rewards, values, mask: (B, T) on the response positions (rewards include the per-token KL penalty);
groups: (B,) ids, equal for the samples of one prompt (`ppo.group_size` of them), or None;
norm_std: grpo's division by the group std (False = Dr. GRPO).
Each estimator ignores the arguments it does not use, so callers never branch on the name. The
outputs are (B, T) and zero outside `mask`.

Critic-free estimators (`CRITIC_FREE`) never read `values`: the trainer passes zeros and skips the
critic's forward, its updates and its warm-up. Their `returns` are the returns the advantages were
built from (a metric; no critic regresses on them). Grouped estimators (`GROUPED`) need `groups`.
§5 of the paper: the coherent reward is not tied to PPO's critic; these are the alternatives it names.
"""

from __future__ import annotations

from typing import Callable

import torch

from srppo.methods.ppo.losses import masked_whiten

Estimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
_REGISTRY: dict[str, Estimator] = {}
CRITIC_FREE: set[str] = set()
GROUPED: set[str] = set()


def register_estimator(name: str, critic_free: bool = False, grouped: bool = False):
    def wrap(fn: Estimator) -> Estimator:
        if name in _REGISTRY:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        _REGISTRY[name] = fn
        if critic_free:
            CRITIC_FREE.add(name)
        if grouped:
            GROUPED.add(name)
        return fn
    return wrap


def registered() -> list[str]:
    return sorted(_REGISTRY)


def get_estimator(name: str) -> Estimator:
    if name not in _REGISTRY:
        raise KeyError(f"unknown advantage estimator '{name}'; registered: {registered()}")
    return _REGISTRY[name]


@register_estimator("gae")
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 0.95, *, groups: torch.Tensor | None = None,
        norm_std: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (5): A_t = sum_l (gamma*lam)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t).

    Positions outside `mask` (prompt, padding) are skipped: the state after the last response token
    is absorbing (EOS) or cut off (truncation), so its value is 0. `groups`, `norm_std`: unused.
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


# -- critic-free estimators ------------------------------------------------------------------

def _sequence_return(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """R_i: task reward (at the last token) plus every token's KL penalty, summed. (B,)"""
    return (rewards * mask).sum(-1)


def _group_index(groups: torch.Tensor | None, batch: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's dense group number (B,) and the size of its group (B,)."""
    if groups is None:
        raise ValueError(f"estimator '{name}' compares samples of the same prompt: it needs `groups` "
                         f"(ppo.group_size >= 2)")
    if groups.shape != (batch,):
        raise ValueError(f"estimator '{name}': groups has shape {tuple(groups.shape)}, expected ({batch},)")
    _, dense = torch.unique(groups, return_inverse=True)
    size = torch.bincount(dense)[dense]
    if (size < 2).any():
        # a lone sample has no baseline: its leave-one-out mean and group std are undefined
        raise ValueError(f"estimator '{name}' needs at least 2 samples per group; a group has 1")
    return dense, size


def _group_sum(x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Sum of x over each row's group, given back per row. (B,) -> (B,)"""
    sums = torch.zeros(int(dense.max()) + 1, dtype=x.dtype, device=x.device).index_add_(0, dense, x)
    return sums[dense]


@register_estimator("grpo", critic_free=True, grouped=True)
def grpo(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
         gamma: float = 1.0, lam: float = 0.95, *, groups: torch.Tensor | None = None,
         norm_std: bool = True, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO (Shao et al., 2024, arXiv 2402.03300): A_i = (R_i - mean_g R) / (std_g R + eps) on every token.

    std is the unbiased one, as in GRPO's reference code. norm_std=False keeps only the centring
    (Dr. GRPO, Liu et al., 2025, arXiv 2503.20783): the std division up-weights prompts whose samples
    all score alike. gamma and lam are unused: one outcome per sequence.
    """
    ret = _sequence_return(rewards, mask)                                  # (B,)
    dense, size = _group_index(groups, ret.shape[0], "grpo")
    centred = ret - _group_sum(ret, dense) / size                         # (B,)
    adv = centred
    if norm_std:
        adv = centred / (torch.sqrt(_group_sum(centred**2, dense) / (size - 1)) + eps)
    return adv[:, None] * mask, ret[:, None] * mask                        # (B, T)


@register_estimator("rloo", critic_free=True, grouped=True)
def rloo(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
         gamma: float = 1.0, lam: float = 0.95, *, groups: torch.Tensor | None = None,
         norm_std: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO (Ahmadian et al., 2024, arXiv 2402.14740): A_i = R_i - mean_{j != i} R_j on every token.

    The baseline leaves the sample itself out, so it stays independent of the action it judges
    (unbiased). gamma, lam, norm_std are unused.
    """
    ret = _sequence_return(rewards, mask)                                  # (B,)
    dense, size = _group_index(groups, ret.shape[0], "rloo")
    baseline = (_group_sum(ret, dense) - ret) / (size - 1)                 # (B,)
    return (ret - baseline)[:, None] * mask, ret[:, None] * mask          # (B, T)


@register_estimator("reinforce_pp", critic_free=True)
def reinforce_pp(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                 gamma: float = 1.0, lam: float = 0.95, *, groups: torch.Tensor | None = None,
                 norm_std: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu, 2025, arXiv 2501.03262): G_t = sum_k gamma^k r_{t+k}, whitened over the buffer.

    The per-token KL penalty inside `rewards` makes early tokens pay for the drift that follows
    them; global whitening (not per prompt) stands in for the critic's baseline. Returns G_t.
    lam, groups, norm_std are unused.
    """
    B, T = rewards.shape
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t]
        # as in gae: positions outside the response carry the running return through untouched
        running = torch.where(m > 0, rewards[:, t] + gamma * running, running)
        returns[:, t] = running * m
    return masked_whiten(returns, mask), returns
