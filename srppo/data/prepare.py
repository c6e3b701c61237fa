"""The `prepare` step: demonstration set, PPO prompt set, calibration set and eval sets.

Either generated (the verifiable instruction testbed) or loaded from real data files, always in
the common record schema of `srppo.data.records`, with the §4.1 overlap setup applied.
"""

from __future__ import annotations

import random
from collections import Counter

from srppo.config.params import PrepareConfig
from srppo.data.records import check_unique_ids, content_key, validate_demo, validate_prompt
from srppo.runtime.stage import log

SPLITS = ("demos", "ppo_prompts", "calibration", "eval")


def with_system_prompt(rec: dict, system_prompt: str | None) -> dict:
    if not system_prompt or rec["messages"][0]["role"] == "system":
        return rec
    return {**rec, "messages": [{"role": "system", "content": system_prompt}] + rec["messages"]}


def testbed_splits(cfg: PrepareConfig) -> dict[str, list[dict]]:
    from srppo.testbed import build_splits

    return build_splits(cfg.overlap, seed=cfg.seed, n_demos=cfg.n_demos, n_subset_demos=cfg.n_subset_demos,
                        n_dilution_demos=cfg.n_dilution_demos, n_ppo_prompts=cfg.n_ppo_prompts,
                        n_calibration=cfg.n_calibration, n_eval_per_family=cfg.n_eval_per_family,
                        ppo_demo_family_share=cfg.ppo_demo_family_share)


def _load(src, seed: int, demos: bool = False) -> list[dict]:
    from srppo.data.loaders import load_records

    return load_records(src.path, src.format, split=src.split, limit=src.limit, seed=seed, demos=demos)


def _new_content(records: list[dict], kept: list[dict], what: str) -> list[dict]:
    """`records` minus the rows whose content (messages and response) is already in `kept` (copies across files).
    A kept row whose id is taken in `kept` (ids generated per file, `family-000001`, meet across files) gets
    the file's key as a prefix (`subset_demos/records-000001`)."""
    seen = {content_key(r) for r in kept}
    new = [r for r in records if content_key(r) not in seen]
    if len(new) < len(records):
        log("prepare", f"{what}: dropped {len(records) - len(new)} row(s) whose messages and response repeat a row "
            f"already in the demonstrations or the calibration set")
    taken = {r["id"] for r in kept}
    key = what.removeprefix("prepare.")
    return [{**r, "id": f"{key}/{r['id']}"} if r["id"] in taken else r for r in new]


def file_splits(cfg: PrepareConfig) -> dict[str, list[dict]]:
    """Real data: the calibration set is held out from the demonstrations (same distribution)."""
    demos = _load(cfg.demos, cfg.seed, demos=True)  # copies by content dropped: none lands on both sides below
    random.Random(cfg.seed).shuffle(demos)
    if len(demos) <= cfg.n_calibration:
        raise ValueError(f"prepare.demos ({cfg.demos.path}): {len(demos)} rows leave nothing after holding out "
                         f"prepare.n_calibration={cfg.n_calibration}")
    calibration, demos = demos[: cfg.n_calibration], demos[cfg.n_calibration :]
    if cfg.overlap in ("medium", "diminished"):
        demos += _new_content(_load(cfg.subset_demos, cfg.seed, demos=True), demos + calibration, "prepare.subset_demos")
    if cfg.overlap == "diminished":
        demos += _new_content(_load(cfg.dilution_demos, cfg.seed, demos=True), demos + calibration,
                              "prepare.dilution_demos")
    prompts = [{k: v for k, v in r.items() if k != "response"} for r in _load(cfg.prompts, cfg.seed)]
    evals = []
    for name, src in cfg.eval_sets.items():
        evals += [{**r, "family": name, "domain": "out", "group": "benchmark"} for r in _load(src, cfg.seed)]
    return {"demos": demos, "ppo_prompts": prompts, "calibration": calibration, "eval": evals}


def prepare(cfg: PrepareConfig) -> dict[str, list[dict]]:
    splits = testbed_splits(cfg) if cfg.source == "testbed" else file_splits(cfg)
    splits = {k: [with_system_prompt(r, cfg.system_prompt) for r in splits[k]] for k in SPLITS}
    for name in SPLITS:
        if not splits[name]:
            raise ValueError(f"prepare: the {name} split is empty after filtering; check prepare.* sizes/sources")
        validate = validate_demo if name in ("demos", "calibration") else validate_prompt
        for row, rec in enumerate(splits[name], start=1):
            validate(rec, f"prepared {name}", row)
        check_unique_ids(splits[name], f"prepared {name}")
    return splits


def describe(splits: dict[str, list[dict]]) -> dict:
    out = {name: {"rows": len(recs), "families": dict(Counter(r.get("family", "?") for r in recs))}
           for name, recs in splits.items()}
    out["eval"]["domains"] = dict(Counter(r.get("domain", "out") for r in splits["eval"]))
    if any("report_group" in r for r in splits["eval"]):
        out["eval"]["report_groups"] = dict(Counter(r.get("report_group", "?") for r in splits["eval"]))
    return out
