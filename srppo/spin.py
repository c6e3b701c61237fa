"""SPIN (Chen et al., 2024, arXiv 2401.01335), the paper's baseline in Table 1.

SPIN is DPO (Rafailov et al., arXiv 2305.18290) on synthetic pairs: the demonstration is always the
chosen response, the model's own sample for the same prompt the rejected one, and the previous
iterate plays the opponent, i.e. DPO's reference. The paper's objection (§1): that preference is
assumed, never checked, and only demonstration prompts can be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spin_loss(policy_chosen_logp: torch.Tensor, policy_rejected_logp: torch.Tensor,
              ref_chosen_logp: torch.Tensor, ref_rejected_logp: torch.Tensor,
              beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """-log sigmoid(beta * ((pc - rc) - (pr - rr))), averaged over pairs.

    All inputs are (B,) sequence log-probs (sums over response tokens); chosen = demonstration,
    rejected = own sample, ref = the previous iterate. Metrics: the implicit rewards
    beta * (policy - ref) of both sides, their margin and how often the demonstration wins.
    """
    # the opponent is frozen: no gradient may reach it even if a caller forgets no_grad
    ref_chosen_logp, ref_rejected_logp = ref_chosen_logp.detach(), ref_rejected_logp.detach()
    chosen = beta * (policy_chosen_logp - ref_chosen_logp)        # (B,)
    rejected = beta * (policy_rejected_logp - ref_rejected_logp)  # (B,)
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        metrics = {"spin_loss": loss.item(), "reward_chosen": chosen.mean().item(),
                   "reward_rejected": rejected.mean().item(), "reward_margin": margin.mean().item(),
                   "reward_accuracy": (margin > 0).float().mean().item()}
    return loss, metrics
