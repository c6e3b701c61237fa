"""The comparison grid's tables (paper Tables 1-4): methods x benchmarks, mean +- std over seeds.

Input: a cell's eval metrics, `<setup>-s<seed>/eval_<method>.json` (one per method; an older grid's single
`eval.json` too), as the `eval` stage writes them ({model: {metric: value, "benchmarks": {task: {metric:
value}}, "alpaca_eval": {...}}}); a PPO method's snapshots (`srppo@25`) are left to fidelity.py. Scores are
percentages, higher is better; "Average" is the mean of the benchmark columns, as in the paper
(the breakdown of the instruction score by group of families is shown but not averaged). SRPPO is compared with
each baseline seed by seed (same seed, same p_SFT, same prompts), on every group of the testbed and on the
Average: a paired difference whose 95 % t-interval excludes zero counts as beyond seed noise. The groups
differ in what they measure (families SFT saw, compositions of them, control families no method should move),
so one Average could hide a gain on one and a loss on another. One seed gives no interval: it says n=1.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

METHODS = {"sft": "SFT", "sft_extended": "SFT (extended)", "spin": "SPIN", "rm_ppo": "PPO w/ RM",
           "rloo": "SRPPO (RLOO)", "srppo": "SRPPO"}
FILTER_METHODS = {"sft": "SFT on all demonstrations", "sft_filtered": "SFT on the top by coherent reward",
                  "sft_random": "SFT on a random subset of the same size"}
TESTBED = [("strict_acc", "IF strict"), ("loose_acc", "IF loose"), ("in_domain_strict", "IF in-domain"),
           ("out_domain_strict", "IF out-of-domain"), ("compositional_strict", "IF compositional"),
           ("control_strict", "IF control"), ("arithmetic_em", "Arithmetic EM")]
# subsets of "IF strict": shown, but left out of the Average (the paper averages benchmarks)
BREAKDOWN = ("IF in-domain", "IF out-of-domain", "IF compositional", "IF control")
# the columns SRPPO's paired differences are reported on; a column no cell has (older metrics) is skipped
GROUPS = ("IF strict", "IF in-domain", "IF compositional", "IF control", "IF out-of-domain", "Arithmetic EM",
          "Average")
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


def collect(metrics_dir: Path, cells: list[str] | None = None) -> list[dict]:
    """Rows {setup, seed, method, column: score} from every cell's eval metrics below `metrics_dir`, only the
    grid's `cells` ("minimum-s0", ...) when given: cells left from an earlier, wider grid (or another preset's
    run) stay on disk but must not enter this grid's means."""
    rows = []
    for folder in sorted(p for p in Path(metrics_dir).iterdir() if p.is_dir()):
        cell = CELL.match(folder.name)
        if not cell or (cells is not None and folder.name not in cells):
            continue
        for path in sorted(folder.glob("eval*.json")):
            for method, result in json.loads(path.read_text()).items():
                if method in METHODS and isinstance(result, dict):
                    rows.append({"setup": cell["setup"], "seed": int(cell["seed"]), "method": method,
                                 **scores(result)})
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def t_interval(values: list[float]) -> dict:
    """Mean, sample std, n and the two-sided 95 % Student-t interval of the mean. With one value the std and
    the interval are None: a single seed says nothing about seed noise, and no number should pretend to."""
    m, sd = mean_std(values)
    n = len(values)
    if n < 2:
        return {"mean": round(m, 2), "std": None, "n": n, "ci95": None}
    half = (T95[n - 2] if n - 1 <= len(T95) else 1.96) * sd / math.sqrt(n)
    return {"mean": round(m, 2), "std": round(sd, 2), "n": n, "ci95": [round(m - half, 2), round(m + half, 2)]}


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
    """SRPPO minus `baseline` on `column`, seed by seed (only seeds where both have it); its mean, std, 95 %
    interval and verdict. None when no seed has both."""
    by_seed = {(r["method"], r["seed"]): r.get(column) for r in rows if r["setup"] == setup}
    diffs = [by_seed[(method, s)] - by_seed[(baseline, s)] for (m, s) in by_seed
             if m == method and by_seed.get((baseline, s)) is not None and by_seed[(m, s)] is not None]
    if not diffs:
        return None
    d = t_interval(diffs)
    low, high = d["ci95"] or (None, None)
    d["verdict"] = "n=1: no interval" if low is None else "better" if low > 0 else "worse" if high < 0 else \
        "within seed noise"
    return d


def paired_differences(rows: list[dict], setup: str, method: str = "srppo") -> dict[str, dict[str, dict]]:
    """{baseline: {group: paired_difference}} for every baseline of `setup` and every group (GROUPS) its
    cells have; a group missing from the metrics (an older eval) is left out, not reported as zero."""
    baselines = [m for m in METHODS if m != method and any(r["setup"] == setup and r["method"] == m for r in rows)]
    out = {}
    for base in baselines:
        diffs = {g: paired_difference(rows, setup, base, g, method) for g in GROUPS}
        out[base] = {g: d for g, d in diffs.items() if d is not None}
    return out


def _difference_cell(d: dict | None) -> str:
    """`+5.00 [+2.52, +7.48], n=3`, bold when the interval excludes zero; `+5.00, n=1` without one."""
    if d is None:
        return "–"
    if d["ci95"] is None:
        return f"{d['mean']:+.2f}, n={d['n']}"
    text = f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], n={d['n']}"
    return f"**{text}**" if d["verdict"] in ("better", "worse") else text


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
        diffs = paired_differences(rows, setup) if "srppo" in by_method else {}
        groups = [g for g in GROUPS if any(g in by_group for by_group in diffs.values())]
        if groups:
            lines += ["", "SRPPO minus each baseline, paired by seed: mean difference [95 % t-interval, none with n=1], "
                      "n seeds; **bold**: the interval excludes zero (beyond seed noise).", "",
                      "| Baseline | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
            for base, by_group in diffs.items():
                lines.append(f"| {METHODS[base]} | " + " | ".join(_difference_cell(by_group.get(g)) for g in groups)
                             + " |")
        lines.append("")
    return "\n".join(lines)


def summary_json(rows: list[dict]) -> dict:
    """Flat enough for `dvc metrics diff`: setup -> method -> column -> mean/std, and SRPPO's paired
    differences: setup -> baseline -> group -> mean/std/n/ci95/verdict."""
    summary = summarise(rows)
    verdicts = {setup: paired_differences(rows, setup) for setup, by_method in summary.items() if "srppo" in by_method}
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


def filter_markdown(results: dict[str, dict[str, dict]], seed: int | None = None) -> str:
    """The §5 data-filter comparison: SFT on the kept demonstrations vs a random subset of equal size, one
    seed per setup (the grid's first, `seed`, whose cell's p_SFT scored the demonstrations)."""
    lines, which = [], "one seed" if seed is None else f"seed {seed}"
    for setup, by_method in results.items():
        cols = list(dict.fromkeys(c for m in by_method.values() for c in m))
        lines += [f"### Coherent reward as a data filter: {setup} overlap ({which})", "",
                  "| Training data | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, cells in by_method.items():
            lines.append(f"| {FILTER_METHODS[method]} | " + " | ".join(
                "–" if cells.get(c) is None else f"{cells[c]:.2f}" for c in cols) + " |")
        top, rand = by_method.get("sft_filtered", {}), by_method.get("sft_random", {})
        if "Average" in top and "Average" in rand:
            gap = top["Average"] - rand["Average"]
            lines += ["", f"Top by reward minus random subset, Average: {gap:+.2f} (n=1: no interval)."]
        lines.append("")
    return "\n".join(lines)


def compare_grid(metrics_dir: Path, setups: list[str] | None = None, cells: list[str] | None = None,
                 filter_seed: int | None = None) -> dict | None:
    """The grid's results in one go: the markdown table (with the data filter's when it ran), summary.json's
    content, the per-method scores for the bar plot and the rows; None when none of `cells` has results."""
    rows = collect(metrics_dir, cells)
    if not rows:
        return None
    filtered = collect_filter(metrics_dir, setups)
    table = markdown(rows) + ("\n" + filter_markdown(filtered, filter_seed) if filtered else "")
    return {"table": table, "summary": {**summary_json(rows), "data_filter": filtered}, "scores": summarise(rows),
            "rows": rows}
