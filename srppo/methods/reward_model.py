"""The RM-PPO baseline's reward model (Table 1, "PPO w/ RM"): Bradley-Terry on ranked answers.

The paper's point of comparison: PPO driven by an independent preference reward model instead of the
coherent reward. Any sequence-classification model can serve (`reward.model_path`); for the embedded
testbed this module trains one. p_SFT answers each demonstration prompt a few times, the testbed's
exact checkers rank the answers (and the demonstration), and a model initialised from p_SFT learns
P(a > b) = sigmoid(r(a) - r(b)) on every pair the checkers separate. A tenth of the prompts is held out
to report how often the model agrees with the labels. `run_reward_model` is the `reward_model` stage's
one library call; loading and scoring with a reward model is srppo/scoring/reward_model.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from srppo.data.batch import collate, encode_response
from srppo.data.records import DataError, read_jsonl
from srppo.methods.pairwise import pair_epochs
from srppo.methods.sft import demos_within_max_len
from srppo.models.loading import context_length, frozen, load_tokenizer
from srppo.rollout.engine import Generation, SamplingParams
from srppo.rollout.sampling import prompt_ids, rollout_engine
from srppo.runtime.distributed import adamw
from srppo.runtime.stage import Timer, log, progress
from srppo.scoring.reward_model import load_reward_model, reward_scores, score_head
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
    """Bradley-Terry epochs over the pairs (AdamW, constant rate, gradient clipping); one row per step,
    numbered from 1, which `on_step(row)` sees as the step ends."""
    device = next(model.parameters()).device
    optimizer = adamw(model.parameters(), cfg.lr, 0.0)
    loss_of = lambda idx: bradley_terry_loss(*pair_scores(model, tok, [pairs[i] for i in idx], device))
    history: list[dict] = []

    def step_row(metrics: dict) -> None:
        history.append({"step": len(history) + 1, **metrics})
        if on_step:
            on_step(history[-1])
    pair_epochs(model, optimizer, len(pairs), cfg, seed, loss_of, "reward_model", step_row)
    return history


def save_reward_model(model, tok, out_dir: Path, info: dict) -> None:
    """HF directory (safetensors) loadable by AutoModelForSequenceClassification, with how it was trained."""
    import json

    from srppo.models.loading import save_pretrained

    model.config.pad_token_id = tok.pad_token_id
    save_pretrained(model, tok, out_dir)
    (Path(out_dir) / "reward_model.json").write_text(json.dumps(info, indent=2))


def sample_answers(params, tok, sft_dir, prompts: list[list[int]], device, dtype, bar=None) -> list[list[Generation]]:
    """`samples_per_prompt` p_SFT answers per prompt (adjacent rows), grouped back per prompt."""
    cfg = params.reward_model
    policy = frozen(sft_dir, device, dtype)
    k = cfg.samples_per_prompt
    engine = rollout_engine(params.rollouts, policy, tok, sft_dir, params.runtime.seed, dtype,
                            tokens=len(prompts) * k * cfg.max_new_tokens)
    gens = engine.generate([p for p in prompts for _ in range(k)],
                           SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature), progress=bar)
    engine.close()
    return [gens[i * k : (i + 1) * k] for i in range(len(prompts))]


def heldout_split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) prompt indices, each in one seeded shuffled order: a tenth held out, at least one."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, n // 10)])
    return [i for i in order if i not in held], [i for i in order if i in held]


@torch.no_grad()
def answer_scores(model, tok, prompts: list[list[int]], answers: list[list[Generation]], batch_size: int,
                  device) -> torch.Tensor:
    """The model's reward for every sampled answer, prompt by prompt."""
    model.eval()
    rows = [(p, g.response_ids) for p, gens in zip(prompts, answers) for g in gens]
    return torch.cat([reward_scores(model, collate([p for p, _ in rows[s : s + batch_size]],
                                                   [r for _, r in rows[s : s + batch_size]],
                                                   tok.pad_token_id).to(device))
                      for s in range(0, len(rows), batch_size)])


@torch.no_grad()
def match_spread(model, scores: torch.Tensor, target_std: float) -> float:
    """Rescale the score head so that `scores` (the model's rewards on p_SFT's answers) get the standard
    deviation `target_std`; returns the factor. Bradley-Terry fixes a reward only up to its scale, and PPO
    prices the KL in units of the raw reward (β per unit): at the coherent reward's spread the same β costs
    the policy as much reward per nat of KL in RM-PPO as in SRPPO, whatever scale training happened to end at.
    """
    std = scores.std().item()
    if not std > 0:
        raise ValueError("the reward model gives every sampled answer the same reward: its scale cannot be matched")
    factor = target_std / std
    head = score_head(model)
    head.weight.mul_(factor)
    if getattr(head, "bias", None) is not None:
        head.bias.mul_(factor)
    return factor


@dataclass
class RewardModelResult:
    model: torch.nn.Module  # the trained Bradley-Terry reward model
    tokenizer: object
    history: list[dict]     # every training step's row, numbered from 1
    info: dict              # pair counts, held-out pair accuracy before and after training, final loss, spread


def run_reward_model(params, sft_dir: str | Path, demos_path: str | Path, device, dtype, *,
                     target_std: float | None = None, timer: Timer | None = None,
                     on_step: Callable[[dict], None] | None = None) -> RewardModelResult:
    """The RM-PPO baseline's reward model from p_SFT: p_SFT's answers to the demonstration prompts, ranked
    into preference pairs (the checkers, or the demonstration first), a held-out tenth of the prompts, and
    Bradley-Terry training with params' `reward_model` section. With `target_std` (e.g. the coherent
    reward's spread on p_SFT's samples, its normaliser's scale) the trained head is rescaled so that its
    rewards on p_SFT's answers spread that much (`match_spread`); rankings and accuracies do not change.

    `timer` gets the sampling and training phases (a fresh "reward_model" one if None); `on_step(row)` sees
    each training step's row as the step ends.
    """
    cfg, seed = params.reward_model, params.runtime.seed
    timer = timer or Timer("reward_model")
    tok = load_tokenizer(sft_dir)
    records = read_jsonl(demos_path)
    prompt_ids(tok, records, demos_path, cfg.max_new_tokens, context_length(sft_dir))  # every row checked
    if cfg.include_demos or cfg.preferences == "demonstrations":  # SFT's length policy: pairs train in batches
        records = demos_within_max_len(tok, records, params.sft.max_len, demos_path, params.sft.overlength,
                                       lambda msg: log("reward_model", msg))
    if cfg.n_prompts and cfg.n_prompts < len(records):
        records = random.Random(seed).sample(records, cfg.n_prompts)
    prompts = prompt_ids(tok, records)
    with timer.phase("sample answers"), progress(len(prompts) * cfg.samples_per_prompt, "rm answers") as bar:
        answers = sample_answers(params, tok, sft_dir, prompts, device, dtype, bar)
    pick = lambda idx: [[x[i] for i in idx] for x in (records, prompts, answers)]
    train_idx, test_idx = heldout_split(len(records), seed)
    train = preference_pairs(*pick(train_idx), tok, cfg, seed, demos_path)
    test = preference_pairs(*pick(test_idx), tok, cfg, seed, demos_path)
    if not train:
        raise DataError(f"reward_model: the labels separate no pair of answers in {demos_path}: nothing to learn")
    log("reward_model", f"{len(train)} training pairs, {len(test)} held-out pairs")
    model = load_reward_model(sft_dir, device, dtype, trainable=True)
    before = pair_accuracy(model, tok, test, cfg.batch_size, device)
    with timer.phase(f"train on {len(train)} pairs"), \
            progress(-(-len(train) // cfg.batch_size) * cfg.epochs, "reward model", "step") as bar:
        def step_row(row: dict) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['rm_loss']:.3f}", acc=f"{row['rm_accuracy']:.2f}")
            if on_step:
                on_step(row)
        history = train_reward_model(model, tok, train, cfg, seed, step_row)
    after = pair_accuracy(model, tok, test, cfg.batch_size, device)
    log("reward_model", f"held-out pair accuracy {before} -> {after}")
    info = {"train_pairs": len(train), "heldout_pairs": len(test), "heldout_accuracy_before": before,
            "heldout_accuracy": after, "final_loss": history[-1]["rm_loss"]}
    scores = answer_scores(model, tok, prompts, answers, cfg.batch_size, device)
    info["answer_reward_std"] = scores.std().item()  # the scale training ended at, on p_SFT's answers
    if target_std is not None:
        info["rescaled_by"] = match_spread(model, scores, target_std)
        log("reward_model", f"rewards on p_SFT's answers spread {info['answer_reward_std']:.4g}; head rescaled "
            f"by {info['rescaled_by']:.4g} to {target_std:.4g}")
    return RewardModelResult(model, tok, history, info)
