"""The coherent reward as a data filter (paper §5): rank demonstrations by r(x, y) under a trained
p_SFT / p_PT pair and keep the top fraction.

A demonstration the SFT model finds far likelier than the pretrained one is typical of what SFT
learned from the set as a whole; one it finds unlikely is an outlier (off-format, noisy, or from
a family the rest does not share). Whether keeping the typical ones helps is measured, not assumed:
the grid trains SFT on the kept set and on a random subset of the same size and evaluates both.
`run_data_filter` is the `filter` stage's one library call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srppo.data.records import read_jsonl
from srppo.models.loading import frozen, load_tokenizer
from srppo.rollout.sampling import demo_generations
from srppo.runtime.stage import Timer, log
from srppo.scoring.calibrate import rewards_of


@dataclass
class FilterResult:
    top: list[dict]            # the top `data_filter.keep_fraction` of the demonstrations by reward, in input order
    random_subset: list[dict]  # as many demonstrations drawn at random, in input order
    scores: list[dict]         # every demonstration's {id, family, reward}, in input order
    report: dict               # filter_report: counts, reward means, threshold, families


def run_data_filter(params, base_dir: str | Path, sft_dir: str | Path, demos_path: str | Path, device, dtype, *,
                    timer: Timer | None = None) -> FilterResult:
    """Every demonstration scored by the coherent reward of p_SFT (`sft_dir`) over p_PT (`base_dir`), the top
    fraction kept and a random subset of the same size drawn with the run's seed (params' `data_filter`).

    `timer` gets the scoring phase (a fresh "filter" one if None).
    """
    timer = timer or Timer("filter")
    tok = load_tokenizer(sft_dir)
    demos = read_jsonl(demos_path)
    with timer.phase(f"score {len(demos)} demonstrations"):
        rewards = demo_rewards(tok, demos, frozen(sft_dir, device, dtype), frozen(base_dir, device, dtype), device,
                               params.rollouts.score_batch_size)
    top, rand = split_by_reward(demos, rewards, params.data_filter.keep_fraction, params.runtime.seed)
    report = filter_report(demos, rewards, top)
    log("filter", f"kept {len(top)} of {len(demos)}: mean reward {report['reward_mean_kept']:.2f} "
        f"(all {report['reward_mean_all']:.2f})")
    scores = [{"id": d["id"], "family": d.get("family"), "reward": float(r)} for d, r in zip(demos, rewards)]
    return FilterResult(top, rand, scores, report)


def demo_rewards(tok, demos: list[dict], sft, pt, device, batch_size: int) -> np.ndarray:
    """r(x, y) = log p_SFT(y|x) - log p_PT(y|x) of every demonstration, scored as PPO scores samples."""
    rewards, _ = rewards_of(demo_generations(tok, demos), sft, pt, tok.pad_token_id, device, batch_size)
    return rewards


def split_by_reward(demos: list[dict], rewards: np.ndarray, keep_fraction: float,
                    seed: int) -> tuple[list[dict], list[dict]]:
    """(the top `keep_fraction` by reward, a random subset of the same size), both in the input order."""
    k = max(1, round(keep_fraction * len(demos)))
    top = set(np.argsort(-rewards, kind="stable")[:k].tolist())
    rand = set(random.Random(seed).sample(range(len(demos)), k))
    return [d for i, d in enumerate(demos) if i in top], [d for i, d in enumerate(demos) if i in rand]


def filter_report(demos: list[dict], rewards: np.ndarray, kept: list[dict]) -> dict:
    ids = {d["id"] for d in kept}
    kept_r = np.array([r for d, r in zip(demos, rewards) if d["id"] in ids])
    families = lambda rows: {f: sum(r.get("family") == f for r in rows) for f in sorted({r.get("family") for r in rows})}
    return {"demos": len(demos), "kept": len(kept), "reward_mean_all": float(rewards.mean()),
            "reward_mean_kept": float(kept_r.mean()), "threshold": float(kept_r.min()),
            "families_all": families(demos), "families_kept": families(kept)}
