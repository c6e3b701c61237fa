"""SPIN (Chen et al., 2024, arXiv 2401.01335), the paper's baseline in Table 1.

SPIN is DPO (Rafailov et al., arXiv 2305.18290) on synthetic pairs: the demonstration is always the
chosen response, the model's own sample for the same prompt the rejected one, and the previous
iterate plays the opponent, i.e. DPO's reference. The paper's objection (§1): that preference is
assumed, never checked, and only demonstration prompts can be used.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from srppo.data.batch import collate
from srppo.methods.pairwise import pair_epochs
from srppo.models.logprobs import sequence_logprob, token_logprobs


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


def sequence_logps(model, tok, prompts: list[list[int]], responses: list[list[int]], device) -> torch.Tensor:
    """(B,) log p(response | prompt) summed over response tokens: DPO's sequence log-likelihood."""
    batch = collate(prompts, responses, tok.pad_token_id).to(device)
    return sequence_logprob(token_logprobs(model, batch), batch.action_mask)


def spin_pairs(engine, encoded: list[tuple], sampling, progress=None) -> list[tuple]:
    """(prompt, demonstration, own sample) for every demonstration: the iteration's synthetic pairs."""
    gens = engine.generate([p for p, _ in encoded], sampling, progress=progress)
    return [(p, chosen, g.response_ids) for (p, chosen), g in zip(encoded, gens)]


@torch.no_grad()
def reference_logps(ref, tok, pairs: list[tuple], batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The opponent's log-probs of both sides, computed once per iteration (it is frozen)."""
    chosen, rejected = [], []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        chosen.append(sequence_logps(ref, tok, [p for p, _, _ in chunk], [c for _, c, _ in chunk], device))
        rejected.append(sequence_logps(ref, tok, [p for p, _, _ in chunk], [r for _, _, r in chunk], device))
    return torch.cat(chosen), torch.cat(rejected)


def train_spin_iteration(model, ref, tok, pairs: list[tuple], cfg, optimizer, seed: int,
                         on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """DPO epochs over this iteration's pairs against the frozen previous iterate `ref`."""
    device = next(model.parameters()).device
    ref_chosen, ref_rejected = reference_logps(ref, tok, pairs, cfg.batch_size, device)

    def loss_of(idx):
        prompts = [pairs[i][0] for i in idx]
        pc = sequence_logps(model, tok, prompts, [pairs[i][1] for i in idx], device)
        pr = sequence_logps(model, tok, prompts, [pairs[i][2] for i in idx], device)
        return spin_loss(pc, pr, ref_chosen[idx], ref_rejected[idx], cfg.beta)

    return pair_epochs(model, optimizer, len(pairs), cfg, seed, loss_of, "spin", on_step)
