"""The coherent reward as a data filter (paper §5): rank demonstrations by r(x, y) under a trained
p_SFT / p_PT pair and keep the top fraction.

A demonstration the SFT model finds far likelier than the pretrained one is typical of what SFT
learned from the set as a whole; one it finds unlikely is an outlier (off-format, noisy, or from
a family the rest does not share). Whether keeping the typical ones helps is measured, not assumed:
the grid trains SFT on the kept set and on a random subset of the same size and evaluates both.
"""

from __future__ import annotations

import random

import numpy as np

from srppo.rollout.sampling import demo_generations
from srppo.scoring.calibrate import rewards_of


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
