"""Exact programmatic checkers for the testbed's constraint specs.

Why programmatic: the testbed measures instruction following without a judge model,
the way IFEval does, so every constraint a prompt states has a checker here that
decides it exactly. Semantics follow IFEval's checkers where one exists (noted per
function); "final_answer" follows the GSM8K convention (last number in the text).
"""

from __future__ import annotations

import re
from typing import Callable

Spec = dict
Checker = Callable[[str, Spec], bool]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+")
_BULLET = re.compile(r"^\s*(?:\*[^*].*|-.*)$", re.MULTILINE)
_TITLE = re.compile(r"<<[^\n]+>>")


def parse_final_number(text: str) -> int | float | None:
    """Last number in `text`, commas removed (GSM8K answer extraction); None if none.

    Integral values come back as int so "The answer is 1,234." -> 1234 compares and
    serialises naturally.
    """
    matches = [m for m in _NUMBER.findall(text) if any(c.isdigit() for c in m)]
    if not matches:
        return None
    value = float(matches[-1].replace(",", ""))
    return int(value) if value.is_integer() else value


def count_words(text: str) -> int:
    """Word count as IFEval counts it (runs of \\w characters)."""
    return len(_WORD.findall(text))


def _param(spec: Spec, name: str):
    """Fetch a required spec parameter; a malformed spec is a ValueError, not a KeyError."""
    if name not in spec:
        raise ValueError(f"check {spec.get('kind')!r} needs parameter {name!r}: {spec}")
    return spec[name]


def _has_letter(text: str) -> bool:
    return any(c.isalpha() for c in text)


def _uppercase(text: str, spec: Spec) -> bool:
    """IFEval change_case:english_capital, plus: at least one letter (empty is no answer)."""
    return _has_letter(text) and text == text.upper()


def _lowercase(text: str, spec: Spec) -> bool:
    """IFEval change_case:english_lowercase, plus: at least one letter."""
    return _has_letter(text) and text == text.lower()


def _include_keyword(text: str, spec: Spec) -> bool:
    """Keyword present as a whole word, case-insensitively (IFEval keywords:existence)."""
    keyword = re.escape(str(_param(spec, "keyword")))
    return re.search(rf"\b{keyword}\b", text, flags=re.IGNORECASE) is not None


def _end_phrase(text: str, spec: Spec) -> bool:
    """IFEval startend:end_checker: stripped, outer quotes dropped, case-insensitive."""
    phrase = str(_param(spec, "phrase")).strip().lower()
    return text.strip().strip('"').lower().endswith(phrase)


def _start_phrase(text: str, spec: Spec) -> bool:
    """Mirror of end_phrase for the opening words."""
    phrase = str(_param(spec, "phrase")).strip().lower()
    return text.strip().strip('"').lower().startswith(phrase)


def _word_limit(text: str, spec: Spec) -> bool:
    """IFEval length_constraints:number_words with relation "less than or equal"."""
    return count_words(text) <= int(_param(spec, "max_words"))


def _bullet_list(text: str, spec: Spec) -> bool:
    """IFEval detectable_format:number_bullet_lists: exactly N '* ' or '- ' lines."""
    return len(_BULLET.findall(text)) == int(_param(spec, "n_items"))


def _quote_wrap(text: str, spec: Spec) -> bool:
    """IFEval startend:quotation: the stripped answer starts and ends with '"'."""
    text = text.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _title_brackets(text: str, spec: Spec) -> bool:
    """IFEval detectable_format:title: some non-empty <<title>> on one line."""
    return any(t.lstrip("<").rstrip(">").strip() for t in _TITLE.findall(text))


def _no_comma(text: str, spec: Spec) -> bool:
    """IFEval punctuation:no_comma."""
    return "," not in text


def _final_answer(text: str, spec: Spec) -> bool:
    """GSM8K: the last number in the response equals the expected value."""
    answer = parse_final_number(text)
    return answer is not None and abs(answer - float(_param(spec, "value"))) < 1e-9


def _ifeval(text: str, spec: Spec) -> bool:
    """IFEval's own instruction checkers (lm-eval's registry, the `eval` extra): every instruction followed.

    The same calls as lm-eval's test_instruction_following_strict; loose scoring comes from
    `loose_variants`, as in IFEval.
    """
    try:
        from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError as err:
        raise ImportError("checks of kind 'ifeval' use lm-eval's IFEval checkers: pip install -e '.[eval]'") from err
    if not text.strip():
        return False
    for iid, kwargs in zip(spec["instruction_id_list"], spec["kwargs"]):
        instruction = INSTRUCTION_DICT[iid](iid)
        instruction.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
        args = instruction.get_instruction_args()
        if args and "prompt" in args:
            instruction.build_description(prompt=spec.get("prompt", ""))
        if not instruction.check_following(text):
            return False
    return True


CHECKERS: dict[str, Checker] = {
    "uppercase": _uppercase,
    "lowercase": _lowercase,
    "include_keyword": _include_keyword,
    "end_phrase": _end_phrase,
    "start_phrase": _start_phrase,
    "word_limit": _word_limit,
    "bullet_list": _bullet_list,
    "quote_wrap": _quote_wrap,
    "title_brackets": _title_brackets,
    "no_comma": _no_comma,
    "final_answer": _final_answer,
    "ifeval": _ifeval,
}


def _checker_for(spec: Spec) -> Checker:
    """Resolve a spec's checker; an unknown kind is a ValueError naming it and the valid kinds."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in CHECKERS:
        raise ValueError(f"unknown check kind {kind!r}; valid kinds: {sorted(CHECKERS)}")
    return CHECKERS[kind]


def loose_variants(response: str) -> list[str]:
    """IFEval's loose transformations: as is / without first line / without last line /
    without both, each also with markdown '*' removed. Empty variants are dropped.

    Why: a model that wraps a correct answer in a chatty preamble or sign-off should
    not score zero on the loose metric.
    """
    lines = response.split("\n")
    base = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    variants = base + [v.replace("*", "") for v in base]
    return [v for v in variants if v.strip()]


def check_response(response: str, checks: list[dict]) -> dict:
    """Score one response against its constraint specs, strictly and loosely.

    Returns {"strict", "loose", "per_check"}. As in IFEval, a check passes loosely when
    any loose variant passes it, and the response passes loosely when every check does
    (a check passing strictly always passes loosely). final_answer entries also report
    the parsed "answer" of the raw response.
    """
    checkers = [_checker_for(spec) for spec in checks]  # validate all before scoring
    variants = loose_variants(response)
    per_check = []
    for spec, checker in zip(checks, checkers):
        strict = checker(response, spec)
        entry = {"kind": spec["kind"], "strict": strict,
                 "loose": strict or any(checker(v, spec) for v in variants)}
        if spec["kind"] == "final_answer":
            entry["answer"] = parse_final_number(response)
        per_check.append(entry)
    return {
        "strict": all(e["strict"] for e in per_check),
        "loose": all(e["loose"] for e in per_check),
        "per_check": per_check,
    }
