"""Experience making: scored responses -> values, per-token rewards with the KL penalty, advantages.

Scoring itself (p_SFT's and p_PT's log-probs, the reward) is srppo/scoring/score.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from srppo.data.batch import Batch
from srppo.methods.ppo.estimators import CRITIC_FREE, get_estimator
from srppo.methods.ppo.losses import kl_penalty, masked_whiten
from srppo.models.logprobs import token_logprobs
from srppo.scoring.rewards import RewardNormalizer, place_at_last_token, token_rewards
from srppo.scoring.score import Scored, in_chunks


@dataclass
class Experience:
    # trajectory
    batch: Batch
    truncated: torch.Tensor    # (B,)
    # policy
    logp_old: torch.Tensor     # (B, T-1) actor log-probs at sampling time
    logp_sft: torch.Tensor     # (B, T-1) KL reference and reward numerator
    # value
    values: torch.Tensor       # (B, T-1) critic's V(s_t) at sampling time
    # outcome
    reward_raw: torch.Tensor   # (B,) coherent reward before normalisation
    rewards: torch.Tensor      # (B, T-1) per-token reward incl. the KL penalty
    advantages: torch.Tensor   # (B, T-1)
    returns: torch.Tensor      # (B, T-1)
    info: dict = field(default_factory=dict)
    is_weights: torch.Tensor | None = None  # (B, T-1) truncated importance weights (engine != trainer), or None

    @property
    def mask(self) -> torch.Tensor:
        return self.batch.action_mask


@torch.no_grad()
def critic_values(critic, batch: Batch) -> torch.Tensor:
    return critic(batch.input_ids, batch.attention_mask)[:, :-1] * batch.action_mask  # V(s_t), (B, T-1)


def build_experience(scored: Scored, logp_old: torch.Tensor, values: torch.Tensor,
                     normalizer: RewardNormalizer, cfg, groups: torch.Tensor | None = None,
                     lam: float | None = None) -> Experience:
    """Rewards (Eq. 4 or Appendix E) minus the per-token KL penalty, then advantages (Eq. 5 or
    `cfg.estimator`). `groups`: (B,) prompt id of each row when prompts are sampled ppo.group_size times.
    `lam`: GAE's lambda instead of cfg.lam (the critic warm-up's 1: Monte Carlo returns).
    """
    mask = scored.batch.action_mask
    kl_coef = kl_coef_normalised(cfg.kl_coef, normalizer)
    if cfg.reward_mode == "sequence":
        task_reward = place_at_last_token(normalizer(scored.reward_raw), mask)
    else:  # Appendix E: every token earns its own log-ratio (scaled like the sequence reward)
        task_reward = token_rewards(scored.logp_sft, scored.logp_pt, mask) / normalizer.scale
    kl = kl_penalty(logp_old, scored.logp_sft, mask)
    rewards = task_reward - kl_coef * kl
    advantages, returns = get_estimator(cfg.estimator)(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam if lam is None else lam,
                                                       groups=groups, norm_std=cfg.grpo_norm_std)
    # critic-free estimators scale their own advantages (group std, batch whitening, or on purpose not)
    if cfg.whiten_advantages and cfg.estimator not in CRITIC_FREE:
        advantages = masked_whiten(advantages, mask)
    lengths = mask.sum(-1)
    info = {
        "reward_raw": scored.reward_raw.mean().item(),
        "reward": (task_reward.sum(-1)).mean().item(),
        "kl": kl.sum(-1).mean().item(),
        "response_length": lengths.mean().item(),
        "eos_rate": 1.0 - scored.truncated.float().mean().item(),
        # what the KL penalty costs per nat of KL, in nats of the raw reward: ppo.kl_coef by construction
        "kl_coef_per_reward_nat": kl_coef * normalizer.scale,
        # the critic's values at sampling time against the Monte Carlo return: for data it has not trained on
        "explained_variance": explained_variance(values, monte_carlo_returns(rewards, mask, cfg.gamma), mask),
    }
    return Experience(scored.batch, scored.truncated, logp_old, scored.logp_sft, values,
                      scored.reward_raw, rewards, advantages, returns, info)


def kl_coef_normalised(kl_coef: float, normalizer: RewardNormalizer) -> float:
    """The KL coefficient in the units PPO optimises: `kl_coef` is per nat of the raw reward (the paper's β).

    The normaliser divides the reward by `scale` (the spread of p_SFT samples' rewards); charging the KL
    at `kl_coef` after that would make the penalty `scale` times heavier than the paper's β relative to
    the reward (7.75x on the embedded default). Scaling reward and KL together keeps the ratio:
    r/scale - (β/scale)·KL = (r - β·KL)/scale.
    """
    return kl_coef / normalizer.scale


def monte_carlo_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = sum_k gamma^k r_{t+k} over the response: GAE's returns with lambda = 1 and no critic."""
    return get_estimator("gae")(rewards, torch.zeros_like(rewards), mask, gamma=gamma, lam=1.0)[1]


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the response tokens: 1 when the critic predicts every return, 0 for a
    constant at the mean, below 0 for worse than that (NaN when the returns do not vary)."""
    n = mask.sum().clamp(min=1)
    mean = lambda x: (x * mask).sum() / n
    var = lambda x: mean((x - mean(x)) ** 2)
    var_r = var(returns)
    return float("nan") if var_r.item() == 0 else (1 - var(returns - values) / var_r).item()


def logprob_gap(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the rollout engine's log-probs of the sampled tokens are from the trainer's.

    Non-zero gaps beyond float noise mean the engine samples from another distribution than the
    one PPO assumes (stale weights after a missed sync, temperature applied on one side only).
    """
    gap = (a - b).abs() * mask
    return {"engine_logprob_gap_max": gap.max().item(),
            "engine_logprob_gap_mean": (gap.sum() / mask.sum().clamp(min=1)).item()}


@torch.no_grad()
def make_experience(actor, critic, scored: Scored, normalizer: RewardNormalizer, cfg,
                    temperature: float = 1.0, groups: torch.Tensor | None = None,
                    chunk: int | None = None, logp_old: torch.Tensor | None = None) -> Experience:
    """`logp_old`: the sampling-time log-probs when the engine reported them (ppo.logp_old='engine');
    otherwise the actor recomputes them here."""
    if logp_old is None:
        logp_old = in_chunks(lambda b: token_logprobs(actor, b, temperature=temperature), scored.batch, chunk)
    # a critic-free estimator never reads V(s): spare the critic's forward
    values = torch.zeros_like(logp_old) if cfg.estimator in CRITIC_FREE else \
        in_chunks(lambda b: critic_values(critic, b), scored.batch, chunk)
    return build_experience(scored, logp_old, values, normalizer, cfg, groups)
