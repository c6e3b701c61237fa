"""The fidelity grid's findings beyond the tables: the primary comparison, accuracy against KL, Appendix E.

Inputs are what the grid's stages leave in git (comparison/metrics, reports and dvclive; no model is loaded):
- `<cell>/eval_<method>.json`: each model's scores, a PPO method's snapshots as `<method>@<percent>`;
- `<cell>/<method>.json` (reports): a PPO run's `snapshots` {percent: iteration, rollouts, KL to p_SFT};
- `<cell>/diagnose.json` (reports): p_SFT's best-of-k by reward per family, at KL ln k - (k-1)/k;
- `<cell>/<method>/plots/metrics/*.tsv` (DVCLive): the PPO runs' curves, one row per iteration.

The primary comparison was fixed before the runs (docs/results/fidelity.md): SRPPO minus SFT on
compositional out-of-domain strict accuracy, minimum overlap, paired by seed, 95 % Student-t interval.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from srppo.evaluation.compare import CELL, paired_difference, t_interval
from srppo.evaluation.plots import _save, plt  # headless matplotlib, and one way of writing a figure
from srppo.testbed.families import FAMILY_REPORT_GROUPS

PRIMARY = {"setup": "minimum", "baseline": "sft", "column": "IF compositional", "method": "srppo"}
PPO_METHODS = {"srppo": "SRPPO", "rloo": "SRPPO (RLOO)", "rm_ppo": "PPO w/ RM"}
COLORS = {"sft": "black", "srppo": "tab:red", "rloo": "tab:orange", "rm_ppo": "tab:blue", "srppo_token": "tab:purple"}
RISE_WINDOW = 8  # iterations averaged at each end of a run for its reward rise


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def cells(metrics_dir: Path, wanted: list[str] | None) -> list[str]:
    found = sorted(p.name for p in Path(metrics_dir).iterdir() if p.is_dir() and CELL.match(p.name))
    return [c for c in found if wanted is None or c in wanted]


def primary_comparison(rows: list[dict]) -> dict:
    """The pre-registered comparison and its verdict in words (None values until the cells have landed)."""
    d = paired_difference(rows, PRIMARY["setup"], PRIMARY["baseline"], PRIMARY["column"], PRIMARY["method"])
    words = {"better": "SRPPO beats SFT", "worse": "SRPPO is worse than SFT",
             "within seed noise": "not distinguishable from seed noise at this scale",
             "n=1: no interval": "one seed so far: no interval, no verdict"}
    return {**PRIMARY, "difference": d, "verdict": words[d["verdict"]] if d else "no cell has both yet"}


def overlap_gain(rows: list[dict], column: str = "IF compositional", more: str = "medium",
                 less: str = "minimum") -> dict | None:
    """Table 3's question: does a small demonstrated subset of the PPO families (`more` overlap) raise SRPPO's
    gain over SFT? Per seed present in both setups, (SRPPO - SFT) under `more` minus the same under `less`: its
    mean and 95 % t-interval. None until a seed has all four numbers."""
    value = {(r["setup"], r["seed"], r["method"]): r.get(column) for r in rows}
    gain = lambda setup, seed: (None if None in (value.get((setup, seed, "srppo")), value.get((setup, seed, "sft")))
                                else value[(setup, seed, "srppo")] - value[(setup, seed, "sft")])
    seeds = sorted({r["seed"] for r in rows})
    diffs = [gain(more, s) - gain(less, s) for s in seeds if gain(more, s) is not None and gain(less, s) is not None]
    return {"column": column, "seeds": len(diffs), **t_interval(diffs)} if diffs else None


def snapshot_differences(metrics_dir: Path, cell_names: list[str], method: str = "srppo", setup: str = "minimum",
                         columns: tuple[str, ...] = ("compositional_strict", "strict_acc")) -> dict:
    """Secondary, not pre-registered: each point of `method`'s run (its snapshots and the final actor) minus
    SFT, paired by seed over `setup`'s cells: {model: {column: mean, sd, n, 95 % t-interval}}."""
    per_model: dict = {}
    for cell in cell_names:
        match = CELL.match(cell)
        if not match or match["setup"] != setup:
            continue
        scores = {}
        for path in sorted((Path(metrics_dir) / cell).glob("eval*.json")):
            scores |= _read(path)
        if "sft" not in scores:
            continue
        for name, result in scores.items():
            if name == method or name.startswith(f"{method}@"):
                for col in columns:
                    if result.get(col) is not None and scores["sft"].get(col) is not None:
                        per_model.setdefault(name, {}).setdefault(col, []).append(result[col] - scores["sft"][col])
    order = lambda name: int(name.split("@")[1]) if "@" in name else 100
    return {name: {col: t_interval(v) for col, v in cols.items()} for name, cols in
            sorted(per_model.items(), key=lambda kv: order(kv[0]))}


def kl_points(metrics_dir: Path, reports_dir: Path, cell: str, column: str = "compositional_strict") -> dict:
    """{method: [(KL to p_SFT, accuracy, label)]} along each PPO run of `cell`, p_SFT's point (0, its accuracy)
    first: the snapshots (method@25, method@50: "25 %") and the final actor ("final", at the iteration where the
    run ended: its last, or where the length guard stopped it), KL of each one's own samples. A snapshot the run
    never reached has no point."""
    scores = {}
    for path in sorted((Path(metrics_dir) / cell).glob("eval*.json")):
        scores |= _read(path)
    sft = scores.get("sft", {}).get(column)
    out = {}
    for method in PPO_METHODS:
        snapshots = _read(Path(reports_dir) / cell / f"{method}.json").get("snapshots") or {}
        points = [(0.0, sft, "p_SFT")] if sft is not None else []
        for pct, info in sorted(snapshots.items(), key=lambda kv: int(kv[0])):
            name = method if pct == "100" else f"{method}@{pct}"
            if name in scores and info.get("kl") is not None:
                label = f"final (it. {info['iteration']})" if pct == "100" else f"{pct} %"
                points.append((info["kl"], scores[name][column], label))
        if len(points) > 1:
            out[method] = points
    return out


def best_of_k_frontier(reports_dir: Path, cell: str, group: str = "compositional") -> list[tuple[float, float, int]]:
    """[(KL, accuracy, k)]: p_SFT's best-of-k by reward, averaged over the out-of-domain families of `group`
    (every family has the same number of prompts). Sampled at temperature 1, where the eval decodes greedily:
    the frontier says what choosing by reward buys over p_SFT's own samples, at what KL."""
    families = _read(Path(reports_dir) / cell / "diagnose.json").get("families") or {}
    chosen = [f for f, s in families.items() if FAMILY_REPORT_GROUPS.get(f) == group and s.get("domain") == "out"
              and s.get("best_of_k")]
    if not chosen:
        return []
    ks = sorted(int(k) for k in families[chosen[0]]["best_of_k"])
    return [(families[chosen[0]]["kl"][str(k)], statistics.mean(families[f]["best_of_k"][str(k)] for f in chosen), k)
            for k in ks]


def plot_accuracy_kl(metrics_dir: Path, reports_dir: Path, cell_names: list[str], path: Path) -> bool:
    """One panel per cell: each PPO method's path from p_SFT through its snapshots, over p_SFT's best-of-k
    frontier. False (nothing drawn) when no cell has a PPO run with its eval yet."""
    panels = [(c, kl_points(metrics_dir, reports_dir, c), best_of_k_frontier(reports_dir, c)) for c in cell_names]
    panels = [p for p in panels if p[1]]
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (cell, points, frontier) in zip(axes.flat, panels):
        if frontier:
            ax.plot([f[0] for f in frontier], [f[1] for f in frontier], "--", color="gray", marker="s", ms=4,
                    label="p_SFT best-of-k (T=1)")
            for kl, acc, k in frontier:
                ax.annotate(f"k={k}", (kl, acc), fontsize=7, color="gray", xytext=(3, -9), textcoords="offset points")
        for method, pts in points.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, color=COLORS[method],
                    label=PPO_METHODS[method])
            for kl, acc, label in pts[1:]:
                ax.annotate(label, (kl, acc), fontsize=7, color=COLORS[method], xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_title(cell, fontsize=10)
        ax.set_xlabel("KL to p_SFT (nats per response)")
        ax.set_ylabel("compositional OOD strict (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Accuracy against KL along the PPO runs (greedy eval), over p_SFT's best-of-k frontier")
    fig.tight_layout()
    _save(fig, path)
    return True


def curve(live_dir: Path, cell: str, method: str, key: str) -> list[float]:
    """One PPO run's per-iteration series from its DVCLive TSV (the warm-up's are under warmup/, not here)."""
    path = Path(live_dir) / cell / method / "plots" / "metrics" / f"{key}.tsv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(row[key]) for row in csv.DictReader(f, delimiter="\t")]


def reward_rise(live_dir: Path, cell: str, method: str, window: int = RISE_WINDOW) -> dict | None:
    """How far the raw reward rose over a run against the noise of a buffer's mean: the mean of the last
    `window` iterations minus the first `window`'s, in units of the standard deviation of the first `window`
    buffer means (where the actor is still near p_SFT, so their spread is a buffer mean's standard error).
    The issue's sizing bar: a rise of at least 3."""
    rewards = curve(live_dir, cell, method, "reward_raw")
    if len(rewards) < 2 * window:
        return None
    first, last = rewards[:window], rewards[-window:]
    se = statistics.stdev(first)
    rise = statistics.mean(last) - statistics.mean(first)
    return {"iterations": len(rewards), "first": round(statistics.mean(first), 3), "last": round(statistics.mean(last), 3),
            "rise": round(rise, 3), "buffer_se": round(se, 3), "rise_in_se": round(rise / se, 2) if se > 0 else None}


def appendix_e(live_dir: Path, reports_dir: Path, cell: str) -> dict | None:
    """The token-wise reward against the sequence reward in `cell`: response length and EOS rate per iteration,
    and where ppo.length_guard stopped the token-wise run (None when it has not run)."""
    token = {k: curve(live_dir, cell, "srppo_token", k) for k in ("response_length", "eos_rate")}
    if not token["response_length"]:
        return None
    seq = {k: curve(live_dir, cell, "srppo", k) for k in ("response_length", "eos_rate")}
    report = _read(Path(reports_dir) / cell / "srppo_token.json")
    return {"cell": cell, "token": token, "sequence": seq, "stopped_early": report.get("stopped_early"),
            "iterations": len(token["response_length"])}


def plot_appendix_e(runs: list[dict], path: Path, max_new_tokens: int | None = None) -> bool:
    if not runs:
        return False
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.4 * len(runs)), squeeze=False)
    for (ax_len, ax_eos), run in zip(axes, runs):
        for kind, color, label in (("sequence", COLORS["srppo"], "sequence reward (Eq. 4)"),
                                   ("token", COLORS["srppo_token"], "token-wise reward (App. E)")):
            for ax, key in ((ax_len, "response_length"), (ax_eos, "eos_rate")):
                ax.plot(range(1, len(run[kind][key]) + 1), run[kind][key], color=color, label=label)
        if max_new_tokens:
            ax_len.axhline(max_new_tokens, color="gray", ls=":", label="token budget")
        if run["stopped_early"]:
            for ax in (ax_len, ax_eos):
                ax.axvline(run["iterations"], color=COLORS["srppo_token"], ls="--", lw=0.8, label="length guard")
        ax_len.set_ylabel("tokens per response (mean)")
        ax_eos.set_ylabel("share ending with EOS")
        for ax in (ax_len, ax_eos):
            ax.set_xlabel("PPO iteration")
            ax.set_title(run["cell"], fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Appendix E: the token-wise coherent reward against the sequence reward")
    fig.tight_layout()
    _save(fig, path)
    return True


def _fmt(x, spec=".2f") -> str:
    return "–" if x is None else format(x, spec)


def fidelity_markdown(rows: list[dict], metrics_dir: Path, reports_dir: Path, live_dir: Path,
                      cell_names: list[str], token_cells: list[str]) -> tuple[str, dict]:
    """comparison/results/fidelity.md and its numbers: the primary comparison's verdict, each PPO run's reward
    rise against the sizing bar, accuracy and KL along the runs, and Appendix E's lengths."""
    primary = primary_comparison(rows)
    d = primary["difference"]
    lines = ["## Primary comparison (fixed before the runs)", "",
             f"SRPPO minus SFT, {PRIMARY['column']} strict accuracy, {PRIMARY['setup']} overlap, paired by seed:", ""]
    if d:
        interval = f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d["ci95"] else "(no interval with one seed)"
        lines.append(f"**{d['mean']:+.2f} points {interval}, n = {d['n']} seeds: {primary['verdict']}.**")
    else:
        lines.append(f"**{primary['verdict']}.**")
    lines += ["", "## Does a demonstrated subset of the PPO families raise SRPPO's gain? (Table 3)", ""]
    overlap = {c: overlap_gain(rows, c) for c in ("IF compositional", "IF strict")}
    for column, g in overlap.items():
        if g is None:
            lines.append(f"- {column}: no seed has both setups yet.")
        else:
            ci = f" [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}]" if g["ci95"] else " (no interval with one seed)"
            lines.append(f"- {column}: (SRPPO − SFT) at medium overlap minus at minimum, paired by seed: "
                         f"{g['mean']:+.2f}{ci}, n = {g['n']}.")
    rises, points = {}, {}
    lines += ["", "## Did PPO move the reward? (sizing bar: a rise of at least 3 buffer-mean standard errors)", "",
              "| Cell | Run | Iterations | Reward, first 8 | Reward, last 8 | Rise | Buffer SE | Rise / SE |",
              "|---|---|---|---|---|---|---|---|"]
    for cell in cell_names:
        for method in (*PPO_METHODS, "srppo_token"):
            r = reward_rise(live_dir, cell, method)
            if r:
                rises.setdefault(cell, {})[method] = r
                lines.append(f"| {cell} | {method} | {r['iterations']} | {r['first']:.2f} | {r['last']:.2f} | "
                             f"{r['rise']:+.2f} | {r['buffer_se']:.2f} | {_fmt(r['rise_in_se'])} |")
    lines += ["", "## Accuracy and KL along the runs", "",
              "Compositional out-of-domain strict accuracy (%) of each snapshot, and its KL to p_SFT (nats per "
              "response, its own samples). p_SFT: KL 0.", "",
              "| Cell | Run | p_SFT | 25 % | 50 % | final |", "|---|---|---|---|---|---|"]
    for cell in cell_names:
        for method, pts in kl_points(metrics_dir, reports_dir, cell).items():
            points.setdefault(cell, {})[method] = pts
            by_label = {label.split(" (")[0]: (kl, acc, label) for kl, acc, label in pts}
            cols = [f"{by_label[k][1]:.2f} (KL {by_label[k][0]:.2f})" + (f", {by_label[k][2][7:-1]}" if k == "final" else "")
                    if k in by_label else "not reached" for k in ("25 %", "50 %", "final")]
            lines.append(f"| {cell} | {PPO_METHODS[method]} | {_fmt(pts[0][1])} | " + " | ".join(cols) + " |")
    snaps = snapshot_differences(metrics_dir, cell_names)
    lines += ["", "Each point of SRPPO's runs minus SFT, minimum overlap, paired by seed (secondary: not pre-registered; "
              "`srppo` is the final actor, the primary comparison's):", "",
              "| Model | compositional strict | IF strict |", "|---|---|---|"]
    for name, cols in snaps.items():
        cell = lambda d: "–" if d is None else (f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], n={d['n']}"
                                               if d["ci95"] else f"{d['mean']:+.2f}, n={d['n']}")
        lines.append(f"| {name} | {cell(cols.get('compositional_strict'))} | {cell(cols.get('strict_acc'))} |")
    runs = [r for r in (appendix_e(live_dir, reports_dir, c) for c in token_cells) if r]
    lines += ["", "## Appendix E: token-wise against sequence reward", ""]
    for run in runs:
        tok, seq = run["token"], run["sequence"]
        lines.append(f"- {run['cell']}: token-wise response length {tok['response_length'][0]:.1f} → "
                     f"{max(tok['response_length']):.1f} tokens at most (EOS rate {tok['eos_rate'][0]:.2f} → "
                     f"{min(tok['eos_rate']):.2f} at least) over {run['iterations']} iterations; sequence reward "
                     + (f"{seq['response_length'][0]:.1f} → {seq['response_length'][-1]:.1f} tokens. "
                        if seq["response_length"] else "not run yet. ")
                     + (f"Stopped: {run['stopped_early']}." if run["stopped_early"] else "The length guard did not trip."))
    if not runs:
        lines.append("Not run yet.")
    summary = {"primary": primary, "overlap_gain": overlap, "snapshots_vs_sft": snaps, "reward_rise": rises, "accuracy_kl": points,
               "appendix_e": [{k: run[k] for k in ("cell", "stopped_early", "iterations")} for run in runs]}
    return "\n".join(lines) + "\n", summary


def placeholder(path: Path, text: str) -> None:
    """A plot that has nothing to draw yet says so (a declared output must exist)."""
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    _save(fig, path)
