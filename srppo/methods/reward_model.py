"""The RM-PPO baseline's reward model (Table 1, "PPO w/ RM"): Bradley-Terry on ranked answers.

The paper's point of comparison: PPO driven by an independent preference reward model instead of the
coherent reward. Any sequence-classification model can serve (`reward.model_path`); for the embedded
testbed this module trains one. p_SFT answers each demonstration prompt a few times, the testbed's
exact checkers rank the answers (and the demonstration), and a model initialised from p_SFT learns
P(a > b) = sigmoid(r(a) - r(b)) on every pair the checkers separate. Loading and scoring with a reward
model is srppo/scoring/reward_model.py.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from srppo.data.batch import collate, encode_response
from srppo.data.records import DataError
from srppo.methods.pairwise import pair_epochs
from srppo.rollout.engine import Generation
from srppo.runtime.distributed import adamw
from srppo.scoring.reward_model import reward_scores
from srppo.testbed import check_response


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """-log sigmoid(r_chosen - r_rejected), averaged over pairs, with accuracy and mean margin."""
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    return loss, {"rm_loss": loss.item(), "rm_accuracy": (margin > 0).float().mean().item(),
                  "rm_margin": margin.mean().item()}


def answer_quality(text: str, checks: list[dict]) -> int:
    """0, 1 or 2: fails, passes loosely only, passes strictly (IFEval's two levels)."""
    verdict = check_response(text, checks)
    return int(bool(verdict["strict"])) + int(bool(verdict["loose"]))


def preference_pairs(records: list[dict], prompts: list[list[int]], samples: list[list[Generation]], tok,
                     cfg, seed: int, source: str) -> list[tuple]:
    """(prompt, better, worse) token triples, at most cfg.max_pairs_per_prompt per prompt (chosen at
    random, seeded): every pair of a prompt's answers the checkers separate, or, with
    cfg.preferences == "demonstrations", the demonstration over each of p_SFT's samples."""
    rng = random.Random(seed)
    rank = _demonstration_pairs if cfg.preferences == "demonstrations" else _checker_pairs
    pairs = []
    for row, (rec, prompt, gens) in enumerate(zip(records, prompts, samples), start=1):
        ranked = rank(rec, prompt, gens, tok, cfg, source, row)
        rng.shuffle(ranked)
        pairs += ranked[: cfg.max_pairs_per_prompt]
    return pairs


def _checker_pairs(rec, prompt, gens, tok, cfg, source, row) -> list[tuple]:
    if not rec.get("checks"):
        raise DataError(source, row, "checks", "is missing: the reward model is trained on checker rankings; "
                        "for data without checkers set reward_model.preferences: demonstrations, or give a "
                        "trained model in reward.model_path")
    answers = [(answer_quality(tok.decode(g.response_ids, skip_special_tokens=True).strip(), rec["checks"]),
                g.response_ids) for g in gens]
    if cfg.include_demos and rec.get("response"):
        demo = encode_response(tok, rec["messages"], rec["response"], prompt)
        answers.append((answer_quality(rec["response"], rec["checks"]), demo))
    return [(prompt, a, b) for qa, a in answers for qb, b in answers if qa > qb]


def _demonstration_pairs(rec, prompt, gens, tok, cfg, source, row) -> list[tuple]:
    if not rec.get("response"):
        raise DataError(source, row, "response", "is missing: reward_model.preferences: demonstrations "
                        "prefers the demonstration to p_SFT's samples")
    demo = encode_response(tok, rec["messages"], rec["response"], prompt)
    return [(prompt, demo, g.response_ids) for g in gens if g.response_ids != demo]


def pair_scores(model, tok, pairs: list[tuple], device) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [p for p, _, _ in pairs]
    chosen = reward_scores(model, collate(prompts, [c for _, c, _ in pairs], tok.pad_token_id).to(device))
    rejected = reward_scores(model, collate(prompts, [r for _, _, r in pairs], tok.pad_token_id).to(device))
    return chosen, rejected


@torch.no_grad()
def pair_accuracy(model, tok, pairs: list[tuple], batch_size: int, device) -> float | None:
    """How often the model ranks held-out pairs as the checkers do."""
    if not pairs:
        return None
    model.eval()
    right = 0
    for s in range(0, len(pairs), batch_size):
        chosen, rejected = pair_scores(model, tok, pairs[s : s + batch_size], device)
        right += int((chosen > rejected).sum())
    return right / len(pairs)


def train_reward_model(model, tok, pairs: list[tuple], cfg, seed: int,
                       on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Bradley-Terry epochs over the pairs (AdamW, constant rate, gradient clipping)."""
    device = next(model.parameters()).device
    optimizer = adamw(model.parameters(), cfg.lr, 0.0)
    loss_of = lambda idx: bradley_terry_loss(*pair_scores(model, tok, [pairs[i] for i in idx], device))
    history = pair_epochs(model, optimizer, len(pairs), cfg, seed, loss_of, "reward_model", on_step)
    return [{"step": i + 1, **row} for i, row in enumerate(history)]


def save_reward_model(model, tok, out_dir: Path, info: dict) -> None:
    """HF directory (safetensors) loadable by AutoModelForSequenceClassification, with how it was trained."""
    import json

    from srppo.models.loading import save_pretrained

    model.config.pad_token_id = tok.pad_token_id
    save_pretrained(model, tok, out_dir)
    (Path(out_dir) / "reward_model.json").write_text(json.dumps(info, indent=2))
