"""The comparison grid's tables (paper Tables 1-4): methods x benchmarks, mean +- std over seeds.

Input: one eval metrics file per cell, `<setup>-s<seed>/eval.json`, as the `eval` stage writes it
({method: {metric: value, "benchmarks": {task: {metric: value}}, "alpaca_eval": {...}}}). Scores are
percentages, higher is better; "Average" is the mean of the benchmark columns, as in the paper
(the in-/out-of-domain breakdown of the instruction score is shown but not averaged). SRPPO is compared with each
baseline seed by seed (same seed, same prompts): a paired difference whose 95 % t-interval excludes
zero counts as beyond seed noise.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

METHODS = {"sft": "SFT", "sft_extended": "SFT (extended)", "spin": "SPIN", "rm_ppo": "PPO w/ RM", "srppo": "SRPPO"}
FILTER_METHODS = {"sft": "SFT on all demonstrations", "sft_filtered": "SFT on the top by coherent reward",
                  "sft_random": "SFT on a random subset of the same size"}
TESTBED = [("strict_acc", "IF strict"), ("loose_acc", "IF loose"), ("in_domain_strict", "IF in-domain"),
           ("out_domain_strict", "IF out-of-domain"), ("arithmetic_em", "Arithmetic EM")]
# subsets of "IF strict": shown, but left out of the Average (the paper averages benchmarks)
BREAKDOWN = ("IF in-domain", "IF out-of-domain")
CELL = re.compile(r"^(?P<setup>.+)-s(?P<seed>\d+)$")
# two-sided 95 % Student-t critical values by degrees of freedom (df > 30: the normal 1.96)
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def scores(result: dict) -> dict[str, float]:
    """One model's eval metrics -> {column: percentage}: the testbed, lm-eval tasks, the judge."""
    out = {label: result[key] for key, label in TESTBED if result.get(key) is not None}
    for task, metrics in (result.get("benchmarks") or {}).items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)):
                out[f"{task.removeprefix('srppo_')} {metric}"] = 100 * value
    judge = result.get("alpaca_eval") or {}
    for key, label in (("win_rate", "AlpacaEval WR"), ("lc_win_rate", "AlpacaEval LC")):
        if judge.get(key) is not None:
            out[label] = judge[key]
    headline = [v for k, v in out.items() if k not in BREAKDOWN]
    if headline:
        out["Average"] = sum(headline) / len(headline)
    return out


def collect(metrics_dir: Path, setups: list[str] | None = None, seeds: list[int] | None = None) -> list[dict]:
    """Rows {setup, seed, method, column: score} from every `<setup>-s<seed>/eval.json` below `metrics_dir`,
    only the grid's cells when `setups`/`seeds` are given: cells left from an earlier, wider grid (or
    another preset's run) stay on disk but must not enter this grid's means."""
    rows = []
    for path in sorted(Path(metrics_dir).glob("*/eval.json")):
        cell = CELL.match(path.parent.name)
        if not cell or (setups is not None and cell["setup"] not in setups) or \
                (seeds is not None and int(cell["seed"]) not in seeds):
            continue
        for method, result in json.loads(path.read_text()).items():
            if method in METHODS and isinstance(result, dict):
                rows.append({"setup": cell["setup"], "seed": int(cell["seed"]), "method": method, **scores(result)})
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def columns(rows: list[dict]) -> list[str]:
    seen = [k for r in rows for k in r if k not in ("setup", "seed", "method")]
    ordered = [label for _, label in TESTBED] + sorted(set(seen) - {label for _, label in TESTBED} - {"Average"})
    return [c for c in ordered if c in seen] + ["Average"]


def summarise(rows: list[dict]) -> dict:
    """{setup: {method: {column: {"mean", "std", "n"}}}} with methods in the paper's order."""
    grouped = defaultdict(lambda: defaultdict(list))
    for r in rows:
        grouped[r["setup"]][r["method"]].append(r)
    out = {}
    for setup, by_method in grouped.items():
        out[setup] = {}
        for method in [m for m in METHODS if m in by_method]:
            out[setup][method] = {}
            for col in columns(rows):
                vals = [r[col] for r in by_method[method] if col in r]
                if vals:
                    m, sd = mean_std(vals)
                    out[setup][method][col] = {"mean": round(m, 2), "std": round(sd, 2), "n": len(vals)}
    return out


def paired_difference(rows: list[dict], setup: str, baseline: str, column: str = "Average",
                      method: str = "srppo") -> dict | None:
    """SRPPO minus `baseline` on `column`, seed by seed; its mean, std, 95 % interval and verdict."""
    by_seed = {(r["method"], r["seed"]): r.get(column) for r in rows if r["setup"] == setup}
    diffs = [by_seed[(method, s)] - by_seed[(baseline, s)] for (m, s) in by_seed
             if m == method and by_seed.get((baseline, s)) is not None and by_seed[(m, s)] is not None]
    if not diffs:
        return None
    m, sd = mean_std(diffs)
    if len(diffs) < 2:
        return {"mean": round(m, 2), "std": None, "n": 1, "ci95": None, "verdict": "one seed: no noise estimate"}
    half = T95[min(len(diffs) - 2, len(T95) - 1)] * sd / math.sqrt(len(diffs)) if len(diffs) <= 31 else \
        1.96 * sd / math.sqrt(len(diffs))
    verdict = "better" if m - half > 0 else "worse" if m + half < 0 else "within seed noise"
    return {"mean": round(m, 2), "std": round(sd, 2), "n": len(diffs),
            "ci95": [round(m - half, 2), round(m + half, 2)], "verdict": verdict}


def markdown(rows: list[dict]) -> str:
    summary, cols = summarise(rows), columns(rows)
    fmt = lambda c: "–" if c is None else f"{c['mean']:.2f} ± {c['std']:.2f}" if c["n"] > 1 else f"{c['mean']:.2f}"
    lines = []
    for setup, by_method in summary.items():
        seeds = sorted({r["seed"] for r in rows if r["setup"] == setup})
        lines += [f"### {setup} overlap ({len(seeds)} seed{'s' * (len(seeds) > 1)}: {seeds})", "",
                  "| Method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, cells in by_method.items():
            name = f"**{METHODS[method]}**" if method == "srppo" else METHODS[method]
            lines.append(f"| {name} | " + " | ".join(fmt(cells.get(c)) for c in cols) + " |")
        lines += ["", "SRPPO minus each baseline on the Average, paired by seed:", "",
                  "| Baseline | mean | std | 95 % interval | verdict |", "|---|---|---|---|---|"]
        for base in [m for m in by_method if m != "srppo"]:
            d = paired_difference(rows, setup, base)
            if d:
                ci = "–" if d["ci95"] is None else f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
                sd = "–" if d["std"] is None else f"{d['std']:.2f}"
                lines.append(f"| {METHODS[base]} | {d['mean']:+.2f} | {sd} | {ci} | {d['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def summary_json(rows: list[dict]) -> dict:
    """Flat enough for `dvc metrics diff`: setup -> method -> column -> mean/std, and the verdicts."""
    summary = summarise(rows)
    verdicts = {setup: {base: paired_difference(rows, setup, base) for base in by_method if base != "srppo"}
                for setup, by_method in summary.items() if "srppo" in by_method}
    return {"scores": summary, "srppo_vs": verdicts}


def collect_filter(metrics_dir: Path, setups: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """{setup: {method: scores}} from every `<setup>/filter_eval.json` (the data-filter comparison)."""
    out = {}
    for path in sorted(Path(metrics_dir).glob("*/filter_eval.json")):
        if setups is not None and path.parent.name not in setups:
            continue
        result = json.loads(path.read_text())
        out[path.parent.name] = {m: scores(result[m]) for m in FILTER_METHODS if isinstance(result.get(m), dict)}
    return out


def filter_markdown(results: dict[str, dict[str, dict]]) -> str:
    """The §5 data-filter comparison: SFT on the kept demonstrations vs a random subset of equal size."""
    lines = []
    for setup, by_method in results.items():
        cols = list(dict.fromkeys(c for m in by_method.values() for c in m))
        lines += [f"### Coherent reward as a data filter: {setup} overlap (seed 0)", "",
                  "| Training data | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, cells in by_method.items():
            lines.append(f"| {FILTER_METHODS[method]} | " + " | ".join(
                "–" if cells.get(c) is None else f"{cells[c]:.2f}" for c in cols) + " |")
        top, rand = by_method.get("sft_filtered", {}), by_method.get("sft_random", {})
        if "Average" in top and "Average" in rand:
            gap = top["Average"] - rand["Average"]
            lines += ["", f"Top by reward minus random subset, Average: {gap:+.2f} (one seed: no noise estimate)."]
        lines.append("")
    return "\n".join(lines)


def compare_grid(metrics_dir: Path, setups: list[str] | None = None, seeds: list[int] | None = None) -> dict | None:
    """The grid's results in one go: the markdown table (with the data filter's when it ran), summary.json's
    content and the per-method scores for the bar plot; None when no cell of `setups` x `seeds` has results."""
    rows = collect(metrics_dir, setups, seeds)
    if not rows:
        return None
    filtered = collect_filter(metrics_dir, setups)
    table = markdown(rows) + ("\n" + filter_markdown(filtered) if filtered else "")
    return {"table": table, "summary": {**summary_json(rows), "data_filter": filtered}, "scores": summarise(rows)}
