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
                mask: torch.Tensor, clip_eps: float = 0.2,
                is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Eq. (7): -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A), averaged over response tokens.

    `is_weights`: per-token truncated importance weights min(pi_old / mu, cap) when the tokens were sampled by
    an engine whose distribution mu is not the trainer's pi_old (off-policy correction; constants, no gradient)."""
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    per_token = -torch.min(unclipped, clipped)
    loss = masked_mean(per_token if is_weights is None else per_token * is_weights, mask)
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


def truncated_is_weights(logp_trainer: torch.Tensor, logp_engine: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> tuple[torch.Tensor, dict]:
    """min(pi_old / mu, cap) per token, and its distribution: the trainer's log-probs of the sampled tokens
    against the engine's that sampled them (vLLM in bf16 is not the trainer's fp32/bf16 forward). Truncated
    importance sampling as TRL (`vllm_importance_sampling_cap`) and verl (`tis_imp_ratio_cap`) apply it: the
    weights correct the mismatch, the cap bounds their variance."""
    ratio = torch.exp(logp_trainer - logp_engine) * mask + (1 - mask)  # 1 outside the response
    weights = ratio.clamp(max=cap).detach()
    with torch.no_grad():
        inside = mask.bool()
        r = ratio[inside] if inside.any() else ratio.new_ones(1)
        info = {"is_ratio_mean": r.mean().item(), "is_ratio_min": r.min().item(), "is_ratio_max": r.max().item(),
                "is_ratio_p99": torch.quantile(r.float(), 0.99).item(), "is_capped_frac": (r > cap).float().mean().item()}
    return weights, info


def kl_penalty(logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log p_theta - log p_ref (k1), the penalty of Eq. (2) paid per token."""
    return (logp - logp_ref) * mask
