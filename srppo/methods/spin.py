"""SPIN (Chen et al., 2024, arXiv 2401.01335), the paper's baseline in Table 1.

SPIN is DPO (Rafailov et al., arXiv 2305.18290) on synthetic pairs: the demonstration is always the
chosen response, the model's own sample for the same prompt the rejected one, and the previous
iterate plays the opponent, i.e. DPO's reference. The paper's objection (§1): that preference is
assumed, never checked, and only demonstration prompts can be used. `run_spin` is the `spin` stage's
one library call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from srppo.data.batch import collate
from srppo.data.records import read_jsonl
from srppo.methods.pairwise import pair_epochs
from srppo.methods.sft import encode_demos
from srppo.models.loading import frozen, load_causal_lm, load_tokenizer
from srppo.models.logprobs import sequence_logprob, token_logprobs
from srppo.rollout.engine import SamplingParams
from srppo.rollout.sampling import rollout_engine
from srppo.runtime.distributed import adamw
from srppo.runtime.stage import Timer, log, progress


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


@dataclass
class SpinResult:
    model: torch.nn.Module    # the last iterate
    tokenizer: object
    history: list[dict]       # every DPO step in order: {step (one counter over iterations), iteration, metrics}
    pairs_per_iteration: int  # the demonstrations kept (sft.max_len, sft.overlength), one pair each


def run_spin(params, sft_dir: str | Path, demos_path: str | Path, device, dtype, *, timer: Timer | None = None,
             on_step: Callable[[dict], None] | None = None) -> SpinResult:
    """SPIN from p_SFT: `spin.iterations` rounds of sampling a rejected answer to every demonstration prompt
    with the current iterate, then DPO epochs against the previous iterate (p_SFT itself in round 0).

    `timer` gets each round's sampling and DPO phases (a fresh "spin" one if None); `on_step(row)` sees
    each DPO step's history row as the step ends.
    """
    cfg, seed = params.spin, params.runtime.seed
    timer = timer or Timer("spin")
    tok = load_tokenizer(sft_dir)
    encoded = encode_demos(tok, read_jsonl(demos_path), params.sft.max_len, demos_path, params.sft.overlength,
                           lambda msg: log("spin", msg))
    model = load_causal_lm(sft_dir, device, dtype, trainable=True)
    opponent = frozen(sft_dir, device, dtype)  # iteration 0 plays against p_SFT itself
    engine = rollout_engine(params.rollouts, model, tok, sft_dir, seed, dtype,
                            tokens=cfg.iterations * len(encoded) * cfg.max_new_tokens)
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    history: list[dict] = []
    for it in range(cfg.iterations):
        with timer.phase(f"iteration {it}: sample {len(encoded)} rejected answers"), \
                progress(len(encoded), f"spin {it} samples") as bar:
            if it:
                engine.sync_weights(model)  # the current iterate writes the rejected answers
            pairs = spin_pairs(engine, encoded, sampling, progress=bar)
        with timer.phase(f"iteration {it}: DPO"), progress(-(-len(pairs) // cfg.batch_size) * cfg.epochs,
                                                            f"spin {it}", "step") as bar:
            optimizer = adamw(model.parameters(), cfg.lr, 0.0)
            train_spin_iteration(model, opponent, tok, pairs, cfg, optimizer, seed + it,
                                 _recorder(history, it, bar, on_step))
        log("spin", f"iteration {it}: loss {history[-1]['spin_loss']:.3f}, margin {history[-1]['reward_margin']:.3f}")
        opponent = copy.deepcopy(model).eval().requires_grad_(False)  # the next opponent: this iterate
    engine.close()
    return SpinResult(model, tok, history, len(encoded))


def _recorder(history: list[dict], iteration: int, bar, on_step) -> Callable[[dict], None]:
    """A DPO step's metrics -> a history row numbered on one counter over all iterations, shown and handed on."""
    def record(metrics: dict) -> None:
        history.append({"step": len(history) + 1, "iteration": iteration, **metrics})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['spin_loss']:.3f}", acc=f"{metrics['reward_accuracy']:.2f}")
        if on_step:
            on_step(history[-1])
    return record
