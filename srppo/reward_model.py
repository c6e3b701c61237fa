"""The RM-PPO baseline's reward model (Table 1, "PPO w/ RM"): Bradley-Terry on ranked answers.

The paper's point of comparison: PPO driven by an independent preference reward model instead of the
coherent reward. Any sequence-classification model can serve (`reward.model_path`); for the embedded
testbed this module trains one. p_SFT answers each demonstration prompt a few times, the testbed's
exact checkers rank the answers (and the demonstration), and a model initialised from p_SFT learns
P(a > b) = sigmoid(r(a) - r(b)) on every pair the checkers separate.

The score is read at the last response token (EOS, or the last token when truncated), the same
position where the coherent reward is paid, whatever the padding: the model's own pooling would
stop at the first pad token and SmolLM2 pads with its EOS id.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from srppo.data.chat import Batch, collate, encode_response
from srppo.data.records import DataError
from srppo.distributed import adamw
from srppo.models import ModelError, check_weights
from srppo.pairwise import pair_epochs
from srppo.rewards import last_action_index
from srppo.rollout.engine import Generation
from srppo.testbed import check_response


def load_reward_model(path: str | Path, device, dtype, trainable: bool = False):
    """A sequence-classification model with one output; from a causal LM the head starts at zero."""
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    check_weights(path)
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, dtype=dtype, use_safetensors=True, output_loading_info=True)
    model = model.to(device)
    head = score_head(model)
    head_names = [n for n, m in model.named_modules() if m is head]
    if any(k.startswith(tuple(head_names)) for k in loading["missing_keys"]):
        # a causal LM's body with a new head: start every answer at the same score, not at noise
        nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:
            nn.init.zeros_(head.bias)
    model.train(trainable)
    model.requires_grad_(trainable)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def score_head(model) -> nn.Module:
    for name in ("score", "classifier"):  # decoder models (Llama, Mistral, Qwen, GPT-2) name it `score`
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise ModelError(f"{type(model).__name__}: no linear `score`/`classifier` head; the reward model must "
                     f"be a sequence-classification model with one label")


def reward_scores(model, batch: Batch) -> torch.Tensor:
    """(B,) scalar reward of each [prompt | response] at its last response token."""
    hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    last = last_action_index(batch.action_mask) + 1  # action t predicts input token t + 1
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return score_head(model)(hidden[rows, last]).squeeze(-1).float()


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

    from srppo.models import save_pretrained

    model.config.pad_token_id = tok.pad_token_id
    save_pretrained(model, tok, out_dir)
    (Path(out_dir) / "reward_model.json").write_text(json.dumps(info, indent=2))
