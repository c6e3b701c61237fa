"""Does the reward point toward the checker? Asked of p_SFT's own samples before PPO spends compute on it.

PPO raises the reward while a KL penalty holds it near p_SFT, so what it can at best buy is what choosing
by reward among p_SFT's samples buys. Best-of-k by reward is that choice at a known price: its KL to p_SFT
is ln k - (k-1)/k nats (Stiennon et al. 2020; an upper bound, Beirami et al. 2024). Per family, on prompts
whose answers can be verified (the testbed's checkers, or the judge against a reference), this module
measures p_SFT's pass rate at the sampling temperature, pass@k (what picking by the checker itself would
reach, Chen et al. 2021), the AUC of the reward for passing against failing samples (raw, and with response
length regressed out: a reward that only likes long answers looks good on the raw AUC alone) and best-of-k
accuracy along the KL axis: the accuracy-against-KL frontier PPO can at best follow.

The verdict compares best-of-(largest k) with the pass rate, not the AUC: both are within-prompt and in the
checker's own units, whereas a family's pooled AUC also ranks easy prompts against hard ones. With the gain
g = best-of-k - pass rate (points) and the room r = pass@k - pass rate (what the checker itself would gain):
'toward' when g >= margin, 'away' when g <= -margin, 'flat' in between, 'undecided' when r < margin (no
reward could clear the margin: the family nearly always passes, or nearly never). Without verdicts only the
reward's correlation with length is measured ('unchecked'). `diagnose_reward` is the `diagnose` stage's call.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.evaluation.judge import judge_pair
from srppo.evaluation.lmeval import ensure_punkt_tab
from srppo.io import atomic_dir
from srppo.models.loading import context_length, frozen, load_tokenizer
from srppo.rollout.sampling import prompt_ids, rollout_engine, sampling_params
from srppo.runtime.stage import Timer, log, progress
from srppo.scoring.calibrate import auc, pearson, rewards_of
from srppo.scoring.reward_model import reward_model_or_none
from srppo.scoring.score import recorded_logprobs_are_the_models
from srppo.testbed import check_response

DECIDED = ("toward", "away", "flat")
OUT_DOMAIN_GAIN = 10.0  # points: the headline counts out-of-domain families best-of-k lifts this far


# ---------------------------------------------------------------------------------------------------
# The measures, on plain arrays.
# ---------------------------------------------------------------------------------------------------

def reward_auc(rewards, passed) -> float | None:
    """P(a passing sample's reward > a failing one's), ties half; None without a pass or without a fail."""
    rewards, passed = np.asarray(rewards, dtype=float), np.asarray(passed, dtype=bool)
    if passed.all() or not passed.any():
        return None
    return auc(rewards[passed], rewards[~passed])


def length_residuals(rewards, lengths) -> np.ndarray:
    """The rewards less their OLS fit on response length (reward ~ a + b length): what length does not explain."""
    y, x = np.asarray(rewards, dtype=float), np.asarray(lengths, dtype=float)
    if x.std() == 0:  # one length: nothing to regress on, only the mean goes
        return y - y.mean()
    slope, intercept = np.polyfit(x, y, 1)
    return y - (intercept + slope * x)


def length_regressed_auc(rewards, lengths, passed) -> float | None:
    return reward_auc(length_residuals(rewards, lengths), passed)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def best_of_k(rewards, passed, k: int) -> float:
    """Expected pass of the highest-reward sample of a uniformly random k-subset of one prompt's n samples,
    a tie for the highest broken uniformly (so it counts the tied samples' mean pass); exact, not sampled.

    The subsets whose highest reward is v are those with at least one of the m samples at v and the rest
    among the `below` samples under it: C(below + m, k) - C(below, k) of the C(n, k).
    """
    r, p = np.asarray(rewards, dtype=float), np.asarray(passed, dtype=float)
    if not 1 <= k <= len(r):
        raise ValueError(f"best-of-{k} needs 1 <= k <= n (n={len(r)})")
    value, below = 0.0, 0
    for v in np.unique(r):  # ascending
        tied = r == v
        m = int(tied.sum())
        value += (math.comb(below + m, k) - math.comb(below, k)) * p[tied].mean()
        below += m
    return value / math.comb(len(r), k)


def kl_best_of_k(k: int) -> float:
    """KL(best-of-k || p_SFT) in nats, ln k - (k-1)/k (exact for distinct rewards, else an upper bound)."""
    return math.log(k) - (k - 1) / k


def spearman(a, b) -> float:
    """Rank correlation, ties at their mean rank; 0 when either side is constant."""
    return pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


def verdict(gain: float, room: float, margin: float) -> str:
    """The module docstring's rule, from best-of-k's gain and pass@k's room over the pass rate (points)."""
    if room < margin:
        return "undecided"
    return "toward" if gain >= margin else "away" if gain <= -margin else "flat"


def family_summary(rows: pd.DataFrame, ks: list[int], margin: float) -> dict:
    """One family's measures (accuracies in %) from its sample rows (id, domain, reward, length, passed;
    `passed` None where nothing judged the sample). Pass measures use the prompts whose samples all have
    a verdict; every prompt needs the same number of samples, at least max(ks)."""
    pct = lambda v: None if v is None else round(100 * v, 2)
    out = {"domain": rows["domain"].iloc[0], "prompts": int(rows["id"].nunique()), "samples": len(rows),
           "length_pearson": round(pearson(rows["reward"].to_numpy(float), rows["length"].to_numpy(float)), 4),
           "length_spearman": round(spearman(rows["reward"], rows["length"]), 4)}
    judged = rows.groupby("id").filter(lambda g: g["passed"].notna().all())
    if judged.empty:
        return {**out, "verdict": "unchecked"}
    passed = judged["passed"].astype(bool)
    groups = [(g["reward"].to_numpy(float), g["passed"].to_numpy(bool)) for _, g in judged.groupby("id", sort=False)]
    pass_rate = float(passed.mean())
    at_k = {k: float(np.mean([pass_at_k(len(p), int(p.sum()), k) for _, p in groups])) for k in ks}
    best = {k: float(np.mean([best_of_k(r, p, k) for r, p in groups])) for k in ks}
    top = max(ks)
    gain, room = 100 * (best[top] - pass_rate), 100 * (at_k[top] - pass_rate)
    auc_raw = reward_auc(judged["reward"], passed)
    auc_len = length_regressed_auc(judged["reward"], judged["length"], passed)
    return {**out, "judged_prompts": len(groups), "pass_rate": pct(pass_rate),
            "pass_at_k": {str(k): pct(v) for k, v in at_k.items()},
            "best_of_k": {str(k): pct(v) for k, v in best.items()},
            "kl": {str(k): round(kl_best_of_k(k), 4) for k in ks},
            "auc": None if auc_raw is None else round(auc_raw, 4),
            "auc_length_regressed": None if auc_len is None else round(auc_len, 4),
            "gain": round(gain, 2), "room": round(room, 2), "verdict": verdict(gain, room, margin)}


def summarise(samples: pd.DataFrame, ks: list[int], margin: float) -> tuple[dict[str, dict], dict]:
    """Per-family summaries (families in first-seen order) and the few headline numbers across them."""
    families = {f: family_summary(g, ks, margin) for f, g in samples.groupby("family", sort=False)}
    aucs = [s["auc"] for s in families.values() if s.get("auc") is not None]
    aucs_len = [s["auc_length_regressed"] for s in families.values() if s.get("auc_length_regressed") is not None]
    headline = {
        "auc_mean": round(float(np.mean(aucs)), 4) if aucs else None,
        "auc_length_regressed_mean": round(float(np.mean(aucs_len)), 4) if aucs_len else None,
        "families_toward": sum(s["verdict"] == "toward" for s in families.values()),
        "families_decided": sum(s["verdict"] in DECIDED for s in families.values()),
        "out_domain_families_gaining_10": sum(s["domain"] == "out" and s.get("gain", -math.inf) >= OUT_DOMAIN_GAIN
                                              for s in families.values()),
        "length_spearman": round(spearman(samples["reward"], samples["length"]), 4),
    }
    return families, headline


# ---------------------------------------------------------------------------------------------------
# The stage's run.
# ---------------------------------------------------------------------------------------------------

@dataclass
class Diagnosis:
    families: dict[str, dict]  # family -> family_summary(): pass rate, pass@k, AUCs, best-of-k and KL, verdict
    headline: dict             # the few numbers compared across runs
    samples: pd.DataFrame      # one row per sample, as in samples.parquet


def choose_prompts(records: list[dict], per_family: int, seed: int) -> list[dict]:
    """`per_family` records of each family (all when it has fewer), drawn with `seed`, in file order."""
    by_family: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_family.setdefault(rec.get("family") or "all", []).append(i)
    rng = random.Random(seed)
    chosen = [i for rows in by_family.values() for i in rng.sample(rows, min(per_family, len(rows)))]
    return [records[i] for i in sorted(chosen)]


def diagnose_reward(params, base_dir: str | Path, sft_dir: str | Path, prompts_path: str | Path,
                    out_dir: str | Path, device, dtype, *, timer: Timer | None = None) -> Diagnosis:
    """p_SFT samples `diagnose.samples_per_prompt` answers to `diagnose.n_prompts_per_family` prompts of each
    family of `prompts_path`; the reward (`reward` section: coherent, or a reward model) scores them and the
    checkers (or `eval.judge`, against the record's `response`) judge them. Writes `out_dir` whole or not at
    all: samples.parquet, table.md, diagnose.png. `timer` gets the phases (a fresh "diagnose" one if None).
    """
    cfg, rcfg = params.diagnose, params.rollouts
    timer = timer or Timer("diagnose")
    sampling = replace(sampling_params(rcfg), temperature=cfg.temperature or rcfg.temperature,
                       max_new_tokens=cfg.max_new_tokens or rcfg.max_new_tokens)
    tok = load_tokenizer(sft_dir)
    items = choose_prompts(read_jsonl(prompts_path), cfg.n_prompts_per_family, params.runtime.seed)
    ids = prompt_ids(tok, items, prompts_path, sampling.max_new_tokens, context_length(sft_dir))  # before sampling
    n = cfg.samples_per_prompt
    rm = reward_model_or_none(params.reward, device, dtype)
    sft, pt = frozen(sft_dir, device, dtype), None if rm else frozen(base_dir, device, dtype)
    # each prompt's samples adjacent: the hf engine prefills a repeated prompt once, score() runs it once
    with timer.phase("sample p_SFT"), progress(len(items) * n, "diagnose samples") as bar:
        engine = rollout_engine(rcfg, sft, tok, sft_dir, params.runtime.seed, dtype,
                                tokens=len(ids) * n * sampling.max_new_tokens)
        gens = engine.generate([p for p in ids for _ in range(n)], sampling, progress=bar)
        engine.close()
    with timer.phase("score"):
        rewards, lengths = rewards_of(gens, sft, pt, tok.pad_token_id, device, rcfg.score_batch_size, rm,
                                      sampled_by_sft=recorded_logprobs_are_the_models(engine, sampling))
    samples = pd.DataFrame({
        "id": [it["id"] for it in items for _ in range(n)],
        "family": [it.get("family") or "all" for it in items for _ in range(n)],
        "domain": [it.get("domain", "out") for it in items for _ in range(n)],
        "sample": [s for _ in items for s in range(n)],
        "reward": rewards, "length": lengths, "truncated": [g.truncated for g in gens],
        "response": [tok.decode(g.response_ids, skip_special_tokens=True).strip() for g in gens]})
    with timer.phase("check"), tempfile.TemporaryDirectory(prefix="srppo-diagnose-nltk-") as nltk_dir:
        ifeval_prompts = [c["prompt"] for it in items for c in it.get("checks") or []
                          if c.get("kind") == "ifeval" and "prompt" in c]
        if ifeval_prompts:  # IFEval's checkers count sentences with nltk's Punkt, as in the eval stage
            log("diagnose", f"punkt_tab: {ensure_punkt_tab(Path(nltk_dir), ifeval_prompts)}")
        samples["passed"], samples["verdict_by"] = verdicts(params.eval.judge, items, samples, params.runtime.seed)
    families, headline = summarise(samples, cfg.ks, cfg.margin)
    with atomic_dir(out_dir) as tmp:
        samples.to_parquet(tmp / "samples.parquet", index=False)
        (tmp / "table.md").write_text(markdown_table(families, cfg.ks))
        plots.accuracy_against_kl(families, samples, tmp / "diagnose.png",
                                  f"Best-of-k by {params.reward.source} reward among p_SFT samples")
    for family, s in families.items():
        log("diagnose", describe(family, s, max(cfg.ks)))
    return Diagnosis(families, headline, samples)


def verdicts(judge_cfg, items: list[dict], samples: pd.DataFrame, seed: int) -> tuple[list, list]:
    """Each sample's pass (strict checkers; else the judge's preference over the record's reference
    `response`, a non-answer counting as a fail; else None) and what gave it."""
    by_id = {it["id"]: it for it in items}
    use_judge = lambda it: bool(judge_cfg.endpoint) and not it.get("checks") and bool(it.get("response"))
    to_judge = sum(use_judge(by_id[i]) for i in samples["id"])
    passed, source, rng = [], [], random.Random(seed)
    with progress(to_judge, "judge") if to_judge else nullcontext() as bar:
        for sample_id, response in zip(samples["id"], samples["response"]):
            it = by_id[sample_id]
            if it.get("checks"):
                passed.append(bool(check_response(response, it["checks"])["strict"]))
                source.append("checker")
            elif use_judge(it):
                pref = judge_pair(judge_cfg.endpoint, judge_cfg.model, it["messages"][-1]["content"], response,
                                  it["response"], rng, os.environ.get(judge_cfg.api_key_env))
                passed.append(pref is not None and pref > 0.5)
                source.append("judge")
                bar.update(1)
            else:
                passed.append(None)
                source.append(None)
    return passed, source


SAYS = {"toward": "the reward points toward the checker", "away": "the reward points AWAY from the checker",
        "flat": "the reward does not move the checker", "undecided": "too little room to tell"}


def describe(family: str, s: dict, top: int) -> str:
    """One log line: the verdict with the numbers behind it."""
    if s["verdict"] == "unchecked":
        return f"{family}: no checker; reward-length Spearman {s['length_spearman']:.2f}"
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    return (f"{family}: {SAYS[s['verdict']]}: best-of-{top} {s['best_of_k'][str(top)]:.1f}% vs pass rate "
            f"{s['pass_rate']:.1f}% (pass@{top} {s['pass_at_k'][str(top)]:.1f}%); AUC {fmt(s['auc'])}, "
            f"length regressed out {fmt(s['auc_length_regressed'])}")


def markdown_table(families: dict[str, dict], ks: list[int]) -> str:
    fmt = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"
    top = max(ks)
    lines = ["Best-of-k by reward among p_SFT's samples (accuracies in %). KL to p_SFT of best-of-k: "
             + ", ".join(f"k={k}: {kl_best_of_k(k):.3f} nats" for k in ks) + ".", "",
             f"| Family | Domain | Prompts | Pass rate | pass@{top} | " + " | ".join(f"best-of-{k}" for k in ks)
             + " | AUC | AUC, length out | Spearman (reward, length) | Verdict |",
             "|---" * (9 + len(ks)) + "|"]
    for family, s in families.items():
        best = [fmt(s.get("best_of_k", {}).get(str(k))) for k in ks]
        lines.append(f"| {family} | {s['domain']} | {s['prompts']} | {fmt(s.get('pass_rate'))} | "
                     f"{fmt(s.get('pass_at_k', {}).get(str(top)))} | " + " | ".join(best)
                     + f" | {fmt(s.get('auc'), 2)} | {fmt(s.get('auc_length_regressed'), 2)} | "
                     f"{fmt(s['length_spearman'], 2)} | {s['verdict']} |")
    return "\n".join(lines) + "\n"
