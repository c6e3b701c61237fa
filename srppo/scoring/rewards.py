"""The coherent reward, Eq. (3): r(x, y) = log p_SFT(y|x) - log p_PT(y|x).

Sequence mode (Eq. 4, the default) sums the per-token log-ratio over the response and pays it at
the last response token: the EOS token, or the last token when the response was truncated.
Token mode (Appendix E) pays each token its own log-ratio; almost every token then earns a
non-negative reward and EOS earns nothing special, so responses grow: it sits behind a flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


def coherent_reward(logp_sft: torch.Tensor, logp_pt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log-probs of the response tokens under p_SFT and p_PT -> (B,) sequence rewards."""
    return ((logp_sft - logp_pt) * mask).sum(-1)


def last_action_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B,) index of the last 1 (the EOS token, or the last token if truncated)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask > 0, positions, -1).max(dim=1).values


def place_at_last_token(seq_reward: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. (4): a (B, T) reward tensor that is zero except at each response's last token."""
    out = torch.zeros_like(mask, dtype=seq_reward.dtype)
    idx = last_action_index(mask)
    out[torch.arange(mask.shape[0], device=mask.device), idx] = seq_reward
    return out


def token_rewards(logp_sft: torch.Tensor, logp_pt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Appendix E, Eq. (8): per-token log-ratio as the reward of every token."""
    return (logp_sft - logp_pt) * mask


@dataclass(frozen=True)
class RewardNormalizer:
    """Explicit, data-derived transform written by the `calibrate` stage and applied by PPO.

    normalised = clip((r - shift) / scale, clip_low, clip_high). Identity: shift=0, scale=1, no clip.
    """

    shift: float = 0.0
    scale: float = 1.0
    clip_low: float = float("-inf")
    clip_high: float = float("inf")

    def __call__(self, reward: torch.Tensor) -> torch.Tensor:
        return ((reward - self.shift) / self.scale).clamp(self.clip_low, self.clip_high)

    def to_dict(self) -> dict:
        return {k: (None if abs(v) == float("inf") else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RewardNormalizer":
        return cls(shift=d["shift"], scale=d["scale"],
                   clip_low=d["clip_low"] if d.get("clip_low") is not None else float("-inf"),
                   clip_high=d["clip_high"] if d.get("clip_high") is not None else float("inf"))
