"""Tests of the verifiable instruction testbed (pure Python, fast)."""

import json
import re

import pytest

from srppo.testbed import (
    CHECKERS, FAMILIES, FAMILY_GROUPS, OVERLAPS, build_splits, check_response,
    families_in, generate_family, parse_final_number,
)
from srppo.testbed.content import TOPICS, keyword_candidates

N = 50
SIZES = dict(n_demos=100, n_subset_demos=24, n_dilution_demos=100, n_ppo_prompts=120,
             n_calibration=30, n_eval_per_family=10)


def _words(text):
    return len(re.findall(r"\w+", text))


def _prompt(record):
    return record["messages"][0]["content"]


# ---- registry and generation -----------------------------------------------------

def test_registry_groups():
    assert len(FAMILY_GROUPS) >= 12
    assert set(FAMILY_GROUPS.values()) == {"core", "prompt", "heldout"}
    assert families_in("core") == ["uppercase", "lowercase", "include_keyword", "end_phrase",
                                   "arithmetic_two_step"]
    assert FAMILY_GROUPS["arithmetic_three_step"] == "heldout"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_demonstrations_pass_their_own_checks(family):
    records = generate_family(family, N, seed=0)
    assert len(records) == N
    for r in records:
        assert r["family"] == family and r["messages"][0]["role"] == "user"
        result = check_response(r["response"], r["checks"])
        assert result["strict"] and result["loose"], (r, result)
        assert _words(r["response"]) <= 25, r["response"]
        assert len(_prompt(r).split()) <= 30, _prompt(r)
    assert len({r["id"] for r in records}) == N
    assert len({_prompt(r) for r in records}) >= N * 0.9  # templates give varied prompts
    json.dumps(records)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generation_is_deterministic_and_seeded(family):
    a = generate_family(family, N, seed=3)
    assert a == generate_family(family, N, seed=3)
    assert a != generate_family(family, N, seed=4)
    assert generate_family(family, 10, seed=3) == a[:10]  # prefix-stable


def test_unknown_family_names_valid_ones():
    with pytest.raises(KeyError, match="uppercase"):
        generate_family("shouting", 3, seed=0)


def test_fact_table_fits_every_constraint():
    assert len(TOPICS) >= 40
    for topic in TOPICS:
        assert len(topic.facts) >= 3
        for fact in topic.facts:
            assert _words(fact) <= 8 and "," not in fact and "'" not in fact, fact
            assert keyword_candidates(fact), fact


def test_arithmetic_answers_are_small_and_consistent():
    for family in ("arithmetic_add_sub", "arithmetic_two_step", "arithmetic_three_step"):
        for r in generate_family(family, 200, seed=1):
            value = r["checks"][0]["value"]
            assert 0 <= value < 200
            assert r["response"].endswith(f"The answer is {value}.")
            numbers = [int(x) for x in re.findall(r"\d+", r["response"])]
            assert max(numbers) < 200


# ---- checkers ------------------------------------------------------------------------

FAILING = [
    ("ifeval", {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "prompt": "No commas."}, "Rain, then sun."),
    ("uppercase", {}, "RAIN is water."),
    ("lowercase", {}, "Rain is water."),
    ("include_keyword", {"keyword": "clouds"}, "Rain falls from the cloudscape."),
    ("end_phrase", {"phrase": "That is all."}, "That is all. Rain is water."),
    ("start_phrase", {"phrase": "Fun fact:"}, "Rain is water. Fun fact:"),
    ("word_limit", {"max_words": 5}, "Rain is water that falls from clouds."),
    ("bullet_list", {"n_items": 3}, "- Rain is water.\n- Rain falls."),
    ("quote_wrap", {}, '"Rain is water.'),
    ("title_brackets", {}, "<Rain>\nRain is water."),
    ("no_comma", {}, "Rain is wet, and cold."),
    ("final_answer", {"value": 12}, "5 + 7 = 12. The answer is 13."),
]


def test_every_kind_has_a_failing_case():
    assert {kind for kind, _, _ in FAILING} == set(CHECKERS)


@pytest.mark.parametrize("kind,params,response", FAILING)
def test_checkers_catch_violations(kind, params, response):
    result = check_response(response, [{"kind": kind, **params}])
    assert not result["strict"] and not result["per_check"][0]["strict"]


def test_loose_forgives_a_chatty_first_line():
    response = "Sure! Here it is:\nRAIN IS WATER THAT FALLS FROM CLOUDS."
    result = check_response(response, [{"kind": "uppercase"}])
    assert result == {"strict": False, "loose": True,
                      "per_check": [{"kind": "uppercase", "strict": False, "loose": True}]}
    end = [{"kind": "end_phrase", "phrase": "Hope this helps."}]
    assert check_response("Sure! Here it is:\nRain is wet. Hope this helps.", end)["strict"]
    signed = check_response("Rain is wet. Hope this helps.\nBye!", end)
    assert not signed["strict"] and signed["loose"]


def test_loose_strips_markdown_stars():
    start = [{"kind": "start_phrase", "phrase": "Fun fact:"}]
    result = check_response("**Fun fact:** rain is wet.", start)
    assert not result["strict"] and result["loose"]
    assert not check_response("**RAIN** IS WET, OK", [{"kind": "no_comma"}])["loose"]


def test_combined_checks_report_each_constraint():
    checks = [{"kind": "lowercase"}, {"kind": "include_keyword", "keyword": "rain"},
              {"kind": "word_limit", "max_words": 4}]
    result = check_response("rain is water that falls.", checks)
    assert [c["strict"] for c in result["per_check"]] == [True, True, False]
    assert not result["strict"] and not result["loose"]


def test_case_checks_need_letters():
    assert not check_response("123.", [{"kind": "uppercase"}])["strict"]
    assert not check_response("", [{"kind": "lowercase"}])["loose"]


def test_unknown_kind_and_bad_spec_are_value_errors():
    with pytest.raises(ValueError, match="rhyme"):
        check_response("x", [{"kind": "rhyme"}])
    with pytest.raises(ValueError, match="phrase"):
        check_response("x", [{"kind": "end_phrase"}])


@pytest.mark.parametrize("text,expected", [
    ("The answer is 1,234.", 1234),
    ("3 + 4 = 7. 7 * 2 = 14. The answer is 14.", 14),
    ("It costs 2.50 dollars.", 2.5),
    ("I owe -3 dollars.", -3),
    ("No numbers here.", None),
])
def test_final_number_parsing(text, expected):
    assert parse_final_number(text) == expected


def test_final_answer_reports_parsed_answer():
    result = check_response("12 + 5 = 17. The answer is 17.", [{"kind": "final_answer", "value": 17}])
    assert result["strict"] and result["per_check"][0]["answer"] == 17
    wrong = check_response("The answer is 1,234.", [{"kind": "final_answer", "value": 1243}])
    assert not wrong["strict"] and wrong["per_check"][0]["answer"] == 1234


# ---- splits --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def splits():
    return {overlap: build_splits(overlap, seed=0, **SIZES) for overlap in OVERLAPS}


def _families(records):
    return {r["family"] for r in records}


def test_demo_families_per_setup(splits):
    core, prompt = set(families_in("core")), set(families_in("prompt"))
    assert _families(splits["minimum"]["demos"]) == core
    assert _families(splits["medium"]["demos"]) == core | prompt
    assert _families(splits["diminished"]["demos"]) == core | prompt
    for overlap in OVERLAPS:
        assert _families(splits[overlap]["ppo_prompts"]) == prompt


def test_split_sizes(splits):
    count_core = lambda s: sum(FAMILY_GROUPS[r["family"]] == "core" for r in s["demos"])
    assert len(splits["minimum"]["demos"]) == SIZES["n_demos"]
    assert len(splits["medium"]["demos"]) == SIZES["n_demos"] + SIZES["n_subset_demos"]
    assert count_core(splits["diminished"]) == count_core(splits["medium"]) + SIZES["n_dilution_demos"]
    for s in splits.values():
        assert len(s["ppo_prompts"]) == SIZES["n_ppo_prompts"]
        assert len(s["calibration"]) == SIZES["n_calibration"]
        assert len(s["eval"]) == SIZES["n_eval_per_family"] * len(FAMILIES)


def test_no_overlap_between_parts(splits):
    for s in splits.values():
        parts = {name: s[name] for name in ("demos", "ppo_prompts", "calibration", "eval")}
        ids = [r["id"] for part in parts.values() for r in part]
        texts = [_prompt(r) for part in parts.values() for r in part]
        assert len(ids) == len(set(ids))
        assert len(texts) == len(set(texts))


def test_record_contents(splits):
    s = splits["medium"]
    assert all("response" not in r for r in s["ppo_prompts"])
    assert all("response" in r for part in ("demos", "calibration", "eval") for r in s[part])
    assert _families(s["calibration"]) <= _families(s["demos"])
    assert _families(splits["minimum"]["calibration"]) == set(families_in("core"))
    json.dumps(s)


def test_domain_labels(splits):
    for overlap, s in splits.items():
        demo_families = _families(s["demos"])
        assert _families(s["eval"]) == set(FAMILIES)
        for r in s["eval"]:
            assert r["group"] == FAMILY_GROUPS[r["family"]]
            assert r["domain"] == ("in" if r["family"] in demo_families else "out")
    domains = lambda ov, group: {r["domain"] for r in splits[ov]["eval"] if r["group"] == group}
    assert domains("minimum", "prompt") == {"out"} and domains("medium", "prompt") == {"in"}
    assert domains("diminished", "heldout") == {"out"}


def test_shared_parts_are_stable_across_setups(splits):
    ids = lambda ov, part: [r["id"] for r in splits[ov][part]]
    assert ids("minimum", "eval") == ids("medium", "eval") == ids("diminished", "eval")
    assert ids("minimum", "ppo_prompts") == ids("medium", "ppo_prompts")
    assert set(ids("minimum", "demos")) < set(ids("medium", "demos"))


def test_splits_deterministic_and_seeded(splits):
    assert build_splits("medium", seed=0, **SIZES) == splits["medium"]
    assert build_splits("medium", seed=1, **SIZES)["demos"] != splits["medium"]["demos"]


def test_bad_overlap_name():
    with pytest.raises(ValueError, match="minimum"):
        build_splits("maximum", seed=0, **SIZES)


def test_too_many_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct prompts"):
        build_splits("minimum", seed=0, **{**SIZES, "n_eval_per_family": 2000})
