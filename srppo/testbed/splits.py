"""Train/eval splits of the testbed for the three SFT/PPO overlap setups.

Why: Section 4.1 of the SRPPO paper varies how much the SFT demonstrations overlap
the PPO prompt distribution (minimum: Tulu demos vs UltraFeedback prompts; medium:
plus a small annotated subset of UltraFeedback; diminished: the same subset diluted
by more Tulu demos). The testbed reproduces that with family groups: "core" families
play Tulu, "prompt" families play UltraFeedback, "heldout" families are evaluation
only. As UltraFeedback shares prompt types with Tulu, a share of the PPO prompt pool is
drawn from the core families too (fresh prompts, never a demonstration's or an eval
item's). Every part is carved from one deduplicated pool per family, so no id or prompt
text is shared between any two parts (in particular, none between training and eval).
"""

from __future__ import annotations

import copy
import random

from .families import FAMILIES, FAMILY_GROUPS, FAMILY_REPORT_GROUPS, families_in, generate_family

OVERLAPS = ("minimum", "medium", "diminished")

# Pool growth: generate this many times the quota (plus slack) before giving up on
# finding enough distinct prompt texts for a family.
_POOL_FACTOR = 4
_POOL_SLACK = 256


def _shares(n: int, families: list[str]) -> dict[str, int]:
    """Split n items over families as evenly as possible (earlier families get the remainder)."""
    if not families:
        return {}
    base, extra = divmod(n, len(families))
    return {fam: base + (1 if i < extra else 0) for i, fam in enumerate(families)}


def _round_robin(per_family: dict[str, list[dict]]) -> list[dict]:
    """Interleave families one record at a time: a balanced, deterministic order."""
    lists = list(per_family.values())
    longest = max((len(x) for x in lists), default=0)
    return [x[i] for i in range(longest) for x in lists if i < len(x)]


def _pool(family: str, size: int, seed: int, used: set[str]) -> list[dict]:
    """`size` records of `family` whose prompt texts are new (not in `used`, not repeated).

    Grows the generated prefix until enough distinct prompts are found; raises
    ValueError when the family's template space cannot supply that many.
    """
    fresh: list[dict] = []
    n, limit = max(2 * size, 16), _POOL_FACTOR * size + _POOL_SLACK
    while True:
        fresh, seen = [], set(used)
        for record in generate_family(family, n, seed):
            text = record["messages"][0]["content"]
            if text not in seen:
                seen.add(text)
                fresh.append(record)
            if len(fresh) == size:
                used.update(r["messages"][0]["content"] for r in fresh)
                return fresh
        if n >= limit:
            raise ValueError(f"family {family!r} yields only {len(fresh)} distinct prompts "
                             f"from {n} draws; {size} requested")
        n = min(2 * n, limit)


def _quotas(overlap: str, counts: dict[str, int]) -> list[tuple[str, dict[str, int]]]:
    """Per-part, per-family record counts for one setup, in allocation order.

    The order is fixed so parts common to all setups (eval, core demos, PPO prompts)
    are the same records whichever setup is built; "eval" and "demos" come first so
    that growing any later part never changes the demonstrations or eval items. The
    dilution slice is reserved in every setup (used only by "diminished") so that the
    core families' share of the PPO pool, carved after it, is the same in all three.
    """
    core, prompt = families_in("core"), families_in("prompt")
    demo_families = core if overlap == "minimum" else core + prompt
    n_ppo_core = round(counts["ppo_demo_family_share"] * counts["n_ppo_prompts"])
    return [
        ("eval", {fam: counts["n_eval_per_family"] for fam in FAMILIES}),
        ("demos", _shares(counts["n_demos"], core)),
        ("ppo_prompts", _shares(counts["n_ppo_prompts"] - n_ppo_core, prompt)),
        ("subset", _shares(counts["n_subset_demos"], prompt) if overlap != "minimum" else {}),
        ("dilution", _shares(counts["n_dilution_demos"], core)),
        ("ppo_core", _shares(n_ppo_core, core)),
        ("calibration", _shares(counts["n_calibration"], demo_families)),
    ]


def _allocate(quotas, seed: int) -> dict[str, dict[str, list[dict]]]:
    """Carve each family's pool into consecutive slices, one per part."""
    used: set[str] = set()
    parts: dict[str, dict[str, list[dict]]] = {name: {} for name, _ in quotas}
    for fam in FAMILIES:
        pool = _pool(fam, sum(q.get(fam, 0) for _, q in quotas), seed, used)
        start = 0
        for name, quota in quotas:
            if quota.get(fam, 0):
                parts[name][fam] = pool[start:start + quota[fam]]
                start += quota[fam]
    return parts


def _shuffled(records: list[dict], seed: int, part: str) -> list[dict]:
    rng = random.Random(f"srppo-splits/{seed}/{part}")
    records = list(records)
    rng.shuffle(records)
    return records


def build_splits(overlap: str, seed: int, n_demos: int, n_subset_demos: int,
                 n_dilution_demos: int, n_ppo_prompts: int, n_calibration: int,
                 n_eval_per_family: int, ppo_demo_family_share: float = 0.25) -> dict[str, list[dict]]:
    """Build {"demos", "ppo_prompts", "calibration", "eval"} for one overlap setup.

    demos: core demos (+ prompt-family subset for medium/diminished, + extra core demos
    for diminished), shuffled. ppo_prompts: records without "response", shuffled:
    round(ppo_demo_family_share * n_ppo_prompts) from the core families, the rest from
    the prompt families. calibration: held-out demonstrations from this setup's demo
    families. eval: n_eval_per_family records of every family with "group" (split
    group), "report_group" (the family's report group) and "domain" ("in" when the
    family appears in this setup's demos, else "out").
    """
    if overlap not in OVERLAPS:
        raise ValueError(f"unknown overlap {overlap!r}; valid values: {list(OVERLAPS)}")
    if not 0 <= ppo_demo_family_share < 1:
        raise ValueError(f"ppo_demo_family_share must be in [0, 1), got {ppo_demo_family_share}")
    counts = dict(n_demos=n_demos, n_subset_demos=n_subset_demos,
                  n_dilution_demos=n_dilution_demos, n_ppo_prompts=n_ppo_prompts,
                  n_calibration=n_calibration, n_eval_per_family=n_eval_per_family)
    negative = {k: v for k, v in counts.items() if v < 0}
    if negative:
        raise ValueError(f"counts must be >= 0: {negative}")
    counts["ppo_demo_family_share"] = ppo_demo_family_share
    parts = _allocate(_quotas(overlap, counts), seed)
    parts = {name: {f: copy.deepcopy(r) for f, r in fams.items()} for name, fams in parts.items()}

    demo_parts = ("demos", "subset", "dilution") if overlap == "diminished" else ("demos", "subset")
    demos = [r for name in demo_parts for r in _round_robin(parts[name])]
    demo_families = {r["family"] for r in demos}
    ppo = [{k: v for k, v in r.items() if k != "response"}
           for r in _round_robin({**parts["ppo_core"], **parts["ppo_prompts"]})]
    evaluation = [
        {**r, "group": FAMILY_GROUPS[fam], "report_group": FAMILY_REPORT_GROUPS[fam],
         "domain": "in" if fam in demo_families else "out"}
        for fam, records in parts["eval"].items() for r in records
    ]
    return {
        "demos": _shuffled(demos, seed, "demos"),
        "ppo_prompts": _shuffled(ppo, seed, "ppo_prompts"),
        "calibration": _round_robin(parts["calibration"]),
        "eval": evaluation,
    }
