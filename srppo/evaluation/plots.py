"""Plots people would rather see than read: training curves, reward histograms, eval bars, and the reward
diagnostic's accuracy against KL."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def curves(history: list[dict], keys: list[str], path: Path, title: str, x: str = "step") -> None:
    keys = [k for k in keys if history and k in history[0]]
    cols = min(3, len(keys)) or 1
    rows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3 * rows), squeeze=False)
    xs = [h.get(x, i) for i, h in enumerate(history)]
    for ax, key in zip(axes.flat, keys):
        ax.plot(xs, [h[key] for h in history], marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def reward_histogram(groups: dict[str, list[float]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in groups.items():
        ax.hist(values, bins=20, alpha=0.5, label=name)
    ax.set_xlabel("coherent reward  log p_SFT(y|x) - log p_PT(y|x)")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def grouped_bars(results: dict[str, dict], keys: list[tuple[str, str]], path: Path, title: str) -> None:
    import numpy as np

    models = list(results)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 3.8))
    for i, m in enumerate(models):
        vals = [results[m].get(k) or 0.0 for k, _ in keys]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=m)
    ax.set_xticks(x, [label for _, label in keys], rotation=15, fontsize=9)
    ax.set_ylabel("%")
    ax.legend()
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars_with_errors(summary: dict, path: Path, title: str) -> None:
    """One panel per setup: a group of bars per column, a bar per method, mean with a +-1 std whisker.

    `summary`: {setup: {method: {column: {"mean", "std", "n"}}}} (srppo.evaluation.compare.summarise).
    """
    import numpy as np

    setups = list(summary)
    fig, axes = plt.subplots(len(setups), 1, figsize=(11, 3.6 * len(setups)), squeeze=False)
    for ax, setup in zip(axes[:, 0], setups):
        methods = list(summary[setup])
        cols = list(dict.fromkeys(c for m in methods for c in summary[setup][m]))
        width, x = 0.8 / max(1, len(methods)), np.arange(len(cols))
        for i, m in enumerate(methods):
            cells = [summary[setup][m].get(c) for c in cols]
            ax.bar(x + i * width - 0.4 + width / 2, [c["mean"] if c else 0 for c in cells], width,
                   yerr=[c["std"] if c else 0 for c in cells], capsize=2, label=m)
        ax.set_xticks(x, cols, rotation=15, fontsize=9)
        ax.set_ylabel("%")
        ax.set_title(f"{title}: {setup} overlap")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(methods))
    fig.tight_layout()
    _save(fig, path)


def accuracy_against_kl(families: dict[str, dict], samples, path: Path, title: str) -> None:
    """Left: best-of-k accuracy against its KL to p_SFT, a line per checked family, with pass@k (the
    checker's own best-of-k, the ceiling) dashed in the same colour. Right: reward against response length
    of every sample, by verdict: a reward that tracks length shows here whatever the checker says.

    `families`: srppo.evaluation.diagnose.summarise's; `samples`: its frame (reward, length, passed).
    """
    fig, (ax, side) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [1.25, 1]})
    checked = {f: s for f, s in families.items() if "best_of_k" in s}
    tab20 = plt.get_cmap("tab20")
    colour = lambda i: tab20((2 * i) % 20 + (i // 10) % 2)  # the ten dark shades first, then the light ones
    for i, (family, s) in enumerate(checked.items()):
        ks = list(s["best_of_k"])
        kl = [s["kl"][k] for k in ks]
        ax.plot(kl, [s["best_of_k"][k] for k in ks], marker="o", ms=3, color=colour(i), label=family)
        ax.plot(kl, [s["pass_at_k"][k] for k in ks], ls="--", lw=0.8, color=colour(i))
    if not checked:
        ax.text(0.5, 0.5, "no family with verdicts", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("KL of best-of-k to p_SFT (nats), ln k - (k-1)/k")
    ax.set_ylabel("accuracy (%): best-of-k by reward; pass@k dashed")
    ax.grid(alpha=0.3)
    if checked:  # beside the axes: twenty families would cover the lines
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for label, shade, rows in (("pass", "tab:green", samples[samples["passed"].eq(True)]),
                               ("fail", "tab:red", samples[samples["passed"].eq(False)]),
                               ("no verdict", "tab:gray", samples[samples["passed"].isna()])):
        if len(rows):
            side.scatter(rows["length"], rows["reward"], s=8, alpha=0.5, color=shade, label=label)
    side.set_xlabel("response length (tokens)")
    side.set_ylabel("reward")
    side.grid(alpha=0.3)
    side.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
