"""Evaluation with exact checkers: strict/loose accuracy per family, in- vs out-of-domain,
arithmetic exact match, response length. Models are compared on the same prompts, greedy."""

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
                     "group": it.get("group", ""),
                     "arithmetic": any(c["kind"] == ARITHMETIC_KIND for c in it["checks"]),
                     "strict": bool(verdict["strict"]), "loose": bool(verdict["loose"]),
                     "tokens": out["tokens"], "truncated": out["truncated"], "response": out["response"]})
    return rows


def _acc(rows: list[dict], key: str) -> float | None:
    return float(np.mean([r[key] for r in rows])) if rows else None


def summarise(rows: list[dict]) -> dict:
    """Headline metrics of one model (percentages) plus a per-family breakdown."""
    by = lambda pred: [r for r in rows if pred(r)]
    pct = lambda v: None if v is None else round(100 * v, 2)
    instr = by(lambda r: not r["arithmetic"])
    arith = by(lambda r: r["arithmetic"])
    out = {
        "strict_acc": pct(_acc(instr, "strict")),
        "loose_acc": pct(_acc(instr, "loose")),
        "in_domain_strict": pct(_acc(by(lambda r: r["domain"] == "in" and not r["arithmetic"]), "strict")),
        "out_domain_strict": pct(_acc(by(lambda r: r["domain"] == "out" and not r["arithmetic"]), "strict")),
        "arithmetic_em": pct(_acc(arith, "strict")),
        "mean_tokens": round(float(np.mean([r["tokens"] for r in rows])), 2),
        "eos_rate": pct(1 - _acc(rows, "truncated")),
        "n": len(rows),
    }
    families = defaultdict(list)
    for r in rows:
        families[r["family"]].append(r)
    out["families"] = {f: {"domain": rs[0]["domain"], "strict": pct(_acc(rs, "strict")),
                           "loose": pct(_acc(rs, "loose")), "n": len(rs)} for f, rs in sorted(families.items())}
    return out


HEADLINE = [("strict_acc", "Strict acc"), ("loose_acc", "Loose acc"), ("in_domain_strict", "In-domain strict"),
            ("out_domain_strict", "Out-of-domain strict"), ("arithmetic_em", "Arithmetic EM"),
            ("mean_tokens", "Mean tokens"), ("eos_rate", "EOS rate")]


def markdown_table(results: dict[str, dict]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.2f}"
    lines = ["| Model | " + " | ".join(h for _, h in HEADLINE) + " |",
             "|---" * (len(HEADLINE) + 1) + "|"]
    for model, m in results.items():
        lines.append(f"| {model} | " + " | ".join(fmt(m[k]) for k, _ in HEADLINE) + " |")
    fams = sorted({f for m in results.values() for f in m["families"]})
    lines += ["", "Per family (strict accuracy, %):", "",
              "| Family | Domain | " + " | ".join(results) + " |", "|---|---" + "|---" * len(results) + "|"]
    for f in fams:
        dom = next(m["families"][f]["domain"] for m in results.values() if f in m["families"])
        cells = [fmt(m["families"].get(f, {}).get("strict")) for m in results.values()]
        lines.append(f"| {f} | {dom} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
