"""Evaluation with exact checkers: strict/loose accuracy per family, in- vs out-of-domain,
arithmetic exact match, response length. Models are compared on the same prompts, greedy.

Out-of-domain accuracy is also split by report group (srppo/testbed/families.py), because
the coherent reward can only help where following the demonstrated behaviour is
compliance: "compositional" families (transfer of demonstrated behaviour) are where a
gain is expected, "control" families (constraints never demonstrated) are where none is.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from srppo.data.batch import encode_prompt
from srppo.rollout.engine import SamplingParams
from srppo.testbed import check_response

ARITHMETIC_KIND = "final_answer"


def generate_responses(engine, tok, items: list[dict], max_new_tokens: int, progress=None) -> list[dict]:
    prompts = [encode_prompt(tok, it["messages"]) for it in items]
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, greedy=True), progress=progress)
    return [{"id": it["id"], "response": tok.decode(g.response_ids, skip_special_tokens=True).strip(),
             "tokens": len(g.response_ids), "truncated": g.truncated} for it, g in zip(items, gens)]


def score_items(items: list[dict], outputs: list[dict]) -> list[dict]:
    """One row per item: the checker verdicts next to what the model wrote."""
    rows = []
    for it, out in zip(items, outputs):
        verdict = check_response(out["response"], it["checks"])
        rows.append({"id": it["id"], "family": it.get("family", "?"), "domain": it.get("domain", "out"),
                     "group": it.get("group", ""), "report_group": it.get("report_group", ""),
                     "arithmetic": any(c["kind"] == ARITHMETIC_KIND for c in it["checks"]),
                     "strict": bool(verdict["strict"]), "loose": bool(verdict["loose"]),
                     "tokens": out["tokens"], "truncated": out["truncated"], "response": out["response"]})
    return rows


def _acc(rows: list[dict], key: str) -> float | None:
    return float(np.mean([r[key] for r in rows])) if rows else None


def _out_of_domain(report_group: str):
    """Rows of one report group that are out of domain in this setup: a compositional or control
    family demonstrated in the SFT data (medium/diminished overlap) counts as in-domain instead."""
    return lambda r: r["domain"] == "out" and not r["arithmetic"] and r.get("report_group") == report_group


# Each reported score's rows: its strict accuracy (%) is the share of them the checkers pass.
GROUPS = {
    "strict_acc": lambda r: not r["arithmetic"],
    "in_domain_strict": lambda r: r["domain"] == "in" and not r["arithmetic"],
    "compositional_strict": _out_of_domain("compositional"),
    "control_strict": _out_of_domain("control"),
    "out_domain_strict": lambda r: r["domain"] == "out" and not r["arithmetic"],
    "arithmetic_em": lambda r: r["arithmetic"],
}


def paired_over_prompts(baseline: list[dict], rows: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """`rows` minus `baseline` per group of GROUPS, paired by eval item: the mean difference of the strict
    verdicts (points), how many items each side alone passed, and a 95 % percentile-bootstrap interval over
    the group's items. It measures the prompts' sampling noise for these two trained models, not the
    training seeds' (the comparison grid's paired-by-seed intervals do that)."""
    passed = {r["id"]: r["strict"] for r in baseline}
    rng = np.random.default_rng(seed)
    out = {}
    for key, pred in GROUPS.items():
        d = np.array([100.0 * (r["strict"] - passed[r["id"]]) for r in rows if r["id"] in passed and pred(r)])
        if not len(d):
            continue
        means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        out[key] = {"mean": round(float(d.mean()), 2), "ci95": [round(float(low), 2), round(float(high), 2)],
                    "n": int(len(d)), "only_this": int((d > 0).sum()), "only_baseline": int((d < 0).sum())}
    return out


def summarise(rows: list[dict]) -> dict:
    """Headline metrics of one model (percentages) plus a per-family breakdown.

    in_domain_strict: demonstrated non-arithmetic families; compositional_strict and
    control_strict: the out-of-domain families of those report groups; out_domain_strict:
    every out-of-domain non-arithmetic family (real benchmark rows included); None where a
    group has no rows.
    """
    by = lambda pred: [r for r in rows if pred(r)]
    pct = lambda v: None if v is None else round(100 * v, 2)
    out = {key: pct(_acc(by(pred), "strict")) for key, pred in GROUPS.items()}
    out.update({
        "loose_acc": pct(_acc(by(GROUPS["strict_acc"]), "loose")),
        "mean_tokens": round(float(np.mean([r["tokens"] for r in rows])), 2),
        "eos_rate": pct(1 - _acc(rows, "truncated")),
        "n": len(rows),
    })
    families = defaultdict(list)
    for r in rows:
        families[r["family"]].append(r)
    out["families"] = {f: {"domain": rs[0]["domain"], "report_group": rs[0].get("report_group", ""),
                           "strict": pct(_acc(rs, "strict")), "loose": pct(_acc(rs, "loose")), "n": len(rs)}
                       for f, rs in sorted(families.items())}
    return out


HEADLINE = [("strict_acc", "Strict acc"), ("loose_acc", "Loose acc"), ("in_domain_strict", "In-domain strict"),
            ("compositional_strict", "Compositional strict"), ("control_strict", "Control strict"),
            ("out_domain_strict", "Out-of-domain strict"), ("arithmetic_em", "Arithmetic EM"),
            ("mean_tokens", "Mean tokens"), ("eos_rate", "EOS rate")]


def paired_markdown(results: dict[str, dict], baseline: str = "sft") -> list[str]:
    """Each model's `vs_<baseline>` block (paired_over_prompts) as a table; [] when there is none."""
    blocks = {m: r[f"vs_{baseline}"] for m, r in results.items() if r.get(f"vs_{baseline}")}
    if not blocks:
        return []
    labels = dict(HEADLINE)
    keys = [k for k in GROUPS if any(k in b for b in blocks.values())]
    lines = ["", f"Minus {baseline}, paired over the same prompts (points; 95 % bootstrap interval over prompts; "
             f"items only this model / only {baseline} passed). Prompt noise only: one training seed.", "",
             "| Model | " + " | ".join(labels[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for model, block in blocks.items():
        cell = lambda d: "–" if d is None else (f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                                                f"({d['only_this']}/{d['only_baseline']})")
        lines.append(f"| {model} | " + " | ".join(cell(block.get(k)) for k in keys) + " |")
    return lines


def markdown_table(results: dict[str, dict]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.2f}"
    lines = ["| Model | " + " | ".join(h for _, h in HEADLINE) + " |",
             "|---" * (len(HEADLINE) + 1) + "|"]
    for model, m in results.items():
        lines.append(f"| {model} | " + " | ".join(fmt(m.get(k)) for k, _ in HEADLINE) + " |")
    lines += paired_markdown(results)
    fams = sorted({f for m in results.values() for f in m["families"]})
    lines += ["", "Per family (strict accuracy, %):", "",
              "| Family | Domain | Report group | " + " | ".join(results) + " |",
              "|---|---|---" + "|---" * len(results) + "|"]
    for f in fams:
        first = next(m["families"][f] for m in results.values() if f in m["families"])
        cells = [fmt(m["families"].get(f, {}).get("strict")) for m in results.values()]
        lines.append(f"| {f} | {first['domain']} | {first.get('report_group') or '–'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
