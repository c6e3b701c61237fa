"""PPO losses as pure functions over explicit tensors, each returning (loss, metrics)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level average over the response tokens of the whole mini-batch."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def policy_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict]:
    """Eq. (7): -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A), averaged over response tokens."""
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean(((ratio - 1).abs() > clip_eps).float(), mask)
        approx_kl = masked_mean(0.5 * (logp - logp_old) ** 2, mask)
    return loss, {"policy_loss": loss.item(), "clip_frac": clip_frac.item(), "approx_kl": approx_kl.item()}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, value_clip: float | None = 0.2) -> tuple[torch.Tensor, dict]:
    """Eq. (6): (V - R)^2, optionally with PPO2's clipped value update (max of both errors)."""
    err = (values - returns) ** 2
    if value_clip is not None:
        clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        err = torch.max(err, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(err, mask)
    return loss, {"value_loss": loss.item()}


def kl_penalty(logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log p_theta - log p_ref (k1), the penalty of Eq. (2) paid per token."""
    return (logp - logp_ref) * mask
