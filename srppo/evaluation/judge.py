"""AlpacaEval-style win rate against reference outputs, judged by any OpenAI-compatible endpoint.

Per instruction the judge sees the two outputs in a random order and answers with one letter; its
preference is the probability it puts on the model's letter (from the first token's log-probs when
the server returns them, else 1/0 from the text, 0.5 when it answers neither). As in AlpacaEval:

- raw win rate = mean preference (ties count half);
- length-controlled win rate = the win rate a logistic model of the preferences predicts at zero
  length difference: logit P(win) = w0 + w1 * tanh(len_diff / std(len_diff)) (AlpacaEval 2's length
  term, without its per-instruction difficulty, which needs many models' judgments to fit).

The endpoint, model name and API key come from params/environment; the key is never logged.
"""

from __future__ import annotations

import json
import math
import os
import random
import urllib.request

from srppo.data.records import require_str, scan_jsonl

PROMPT = """Which output follows the instruction better? Answer with a single letter: a or b.

# Instruction
{instruction}

# Output a
{a}

# Output b
{b}

Answer (a or b):"""


def _post(url: str, body: dict, api_key: str | None, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def letter_preference(choice: dict, letter: str) -> float | None:
    """P(judge answers `letter`) between 'a' and 'b', from top log-probs or else from the text."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        probs = {"a": 0.0, "b": 0.0}
        for alt in content[0].get("top_logprobs", []):
            token = alt["token"].strip().lower()
            if token in probs:
                probs[token] += math.exp(alt["logprob"])
        if probs["a"] + probs["b"] > 0:
            return probs[letter] / (probs["a"] + probs["b"])
    text = (choice.get("message", {}).get("content") or "").strip().lower()[:1]
    if text not in ("a", "b"):
        return None
    return 1.0 if text == letter else 0.0


def judge_pair(endpoint: str, judge_model: str, instruction: str, output: str, reference: str,
               rng: random.Random, api_key: str | None = None, timeout: float = 120.0) -> float | None:
    """Preference for `output` over `reference` in [0, 1]; None when the judge answered neither letter."""
    model_first = rng.random() < 0.5  # position bias cancels out over the set
    a, b = (output, reference) if model_first else (reference, output)
    choice = ask(endpoint, judge_model, PROMPT.format(instruction=instruction, a=a, b=b), api_key, timeout)
    return letter_preference(choice, "a" if model_first else "b")


def ask(endpoint: str, judge_model: str, prompt: str, api_key: str | None = None, timeout: float = 120.0) -> dict:
    """One greedy token from the judge with its top-5 log-probs (the chat completions API)."""
    body = {"model": judge_model, "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 5,
            "messages": [{"role": "user", "content": prompt}]}
    return _post(endpoint.rstrip("/") + "/chat/completions", body, api_key, timeout)["choices"][0]


def length_controlled(prefs: list[float], len_diffs: list[float], steps: int = 2000, lr: float = 0.5) -> float:
    """Win rate at zero length difference under logit P = w0 + w1 * tanh(d / std(d)) (fit by gradient ascent)."""
    n = len(prefs)
    std = (sum(d * d for d in len_diffs) / n - (sum(len_diffs) / n) ** 2) ** 0.5 or 1.0
    feats = [math.tanh(d / std) for d in len_diffs]
    w0 = w1 = 0.0
    for _ in range(steps):  # convex log-likelihood with soft targets; tiny n, plain Python is enough
        g0 = g1 = 0.0
        for y, x in zip(prefs, feats):
            p = 1 / (1 + math.exp(-(w0 + w1 * x)))
            g0 += y - p
            g1 += (y - p) * x
        w0, w1 = w0 + lr * g0 / n, w1 + lr * g1 / n
    return 1 / (1 + math.exp(-w0))


def win_rate(endpoint: str, judge_model: str, items: list[dict], seed: int = 0, api_key: str | None = None,
             progress=None) -> dict:
    """`items`: {instruction, output, reference}. Returns raw and length-controlled win rates (%) and counts."""
    rng = random.Random(seed)
    prefs, diffs, unparsed = [], [], 0
    for it in items:
        pref = judge_pair(endpoint, judge_model, it["instruction"], it["output"], it["reference"], rng, api_key)
        if pref is None:
            unparsed += 1
            pref = 0.5
        prefs.append(pref)
        diffs.append(len(it["output"]) - len(it["reference"]))
        if progress is not None:
            progress.update(1)
    return {"win_rate": 100 * sum(prefs) / len(prefs), "lc_win_rate": 100 * length_controlled(prefs, diffs),
            "n": len(prefs), "unparsed": unparsed,
            "mean_length": sum(len(it["output"]) for it in items) / len(items)}


def load_instructions(path: str, reference_field: str, limit: int | None) -> list[dict]:
    """Instructions with their reference outputs; a row without them is named before any generation."""
    items = []
    for row, rec in scan_jsonl(path)[:limit]:
        prompt = require_str(rec, "prompt", path, row)
        items.append({"id": str(rec.get("id", row)), "messages": [{"role": "user", "content": prompt}],
                      "instruction": prompt, "reference": require_str(rec, reference_field, path, row)})
    return items


def judge_outputs(cfg, items: list[dict], outputs: list[dict], seed: int, progress=None) -> dict:
    """`cfg` is params.eval.judge; `outputs` as from srppo.evaluation.testbed_eval.generate_responses, in item order."""
    pairs = [{"instruction": it["instruction"], "reference": it["reference"], "output": out["response"]}
             for it, out in zip(items, outputs)]
    return win_rate(cfg.endpoint, cfg.model, pairs, seed, os.environ.get(cfg.api_key_env), progress)
