"""Tests of the verifiable instruction testbed (pure Python, fast)."""

import hashlib
import json
import re

import pytest

from srppo.testbed import (
    CHECKERS, FAMILIES, FAMILY_GROUPS, FAMILY_REPORT_GROUPS, OVERLAPS, REPORT_GROUPS, build_splits,
    check_response, families_in, families_reported_as, generate_family, parse_final_number,
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
    # the core families lead the registry: splits carve pools in registry order (see the pinned demos below)
    assert list(FAMILIES)[:5] == families_in("core") == ["uppercase", "lowercase", "include_keyword",
                                                         "end_phrase", "arithmetic_two_step"]
    assert FAMILY_GROUPS["arithmetic_three_step"] == "heldout"
    assert "word_limit" not in FAMILIES and "no_comma" not in FAMILIES


def test_report_groups():
    assert set(FAMILY_REPORT_GROUPS.values()) == set(REPORT_GROUPS)
    assert families_reported_as("in_domain") == ["uppercase", "lowercase", "include_keyword", "end_phrase"]
    assert families_reported_as("control") == ["bullet_list", "quote_wrap", "start_phrase", "title_brackets"]
    assert families_reported_as("arithmetic") == [f for f in FAMILIES if f.startswith("arithmetic_")]
    compositional = families_reported_as("compositional")
    assert 6 <= len(compositional) <= 8
    assert {"combo_upper_end", "combo_lower_keyword_limit"} <= set(compositional)
    # most transfer families train PPO; one or two stay for evaluation only, with title_brackets
    heldout = [f for f in compositional if FAMILY_GROUPS[f] == "heldout"]
    assert 1 <= len(heldout) <= 2 and FAMILY_GROUPS["title_brackets"] == "heldout"
    assert all(FAMILY_GROUPS[f] == "prompt" for f in ("start_phrase", "quote_wrap", "bullet_list"))
    # in-domain families are exactly the demonstrated (core) non-arithmetic ones
    assert set(families_reported_as("in_domain")) == set(families_in("core")) - {"arithmetic_two_step"}
    with pytest.raises(ValueError, match="compositional"):
        families_reported_as("transfer")


@pytest.mark.parametrize("family", families_reported_as("compositional"))
def test_compositional_families_only_use_demonstrated_checks(family):
    """A transfer family asks only for what the core demonstrations show (case, keyword, ending),
    plus the word limit of the one combination kept from before, so following p_SFT is compliance."""
    demonstrated = {c["kind"] for f in families_in("core") for r in generate_family(f, 20, 0) for c in r["checks"]}
    kinds = {c["kind"] for r in generate_family(family, N, seed=0) for c in r["checks"]}
    assert kinds <= demonstrated | {"word_limit"}, kinds


def test_paraphrases_never_reuse_a_demonstrated_wording():
    from srppo.testbed import families as fam

    for paraphrase in fam.PARA_UPPER + fam.PARA_LOWER + fam.PARA_END:
        assert all(paraphrase != w and paraphrase.lower() not in w.lower() for w in fam.UPPER + fam.LOWER + fam.END)
    demo_prompts = [_prompt(r) for f in families_in("core") for r in generate_family(f, 200, 0)]
    for family in ("paraphrase_case", "paraphrase_end"):
        for r in generate_family(family, N, seed=0):
            assert not any(w.split("{")[0] in _prompt(r) for w in fam.UPPER + fam.LOWER + fam.END), _prompt(r)
    assert all(not any(q.split("{")[0] in p for q in fam.QA_TASKS) for p in demo_prompts)


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
    for family in families_reported_as("arithmetic"):
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
        assert _families(splits[overlap]["ppo_prompts"]) == core | prompt


# sha256 of the default's (prepare section of params.yaml) demonstrations and core eval records, computed
# before the out-of-domain families were added: new families must never change what SFT trains on.
DEFAULT_SIZES = ("minimum", 0, 192, 32, 96, 256, 32, 12)
DEFAULT_DEMOS_SHA256 = "88b40835686373f6cf226d9d26d8544d861af850754629f236451102a185a49e"
DEFAULT_CORE_EVAL_SHA256 = "b6aa587ed49d6265520527a0ee1e68e1d22049874546608f6cc0283b1ad676c3"


def _sha256(records):
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def test_default_demos_and_core_eval_are_pinned():
    s = build_splits(*DEFAULT_SIZES)
    assert _sha256(s["demos"]) == DEFAULT_DEMOS_SHA256
    labels = ("group", "domain", "report_group")
    core_eval = [{k: v for k, v in r.items() if k not in labels}
                 for r in s["eval"] if FAMILY_GROUPS[r["family"]] == "core"]
    assert _sha256(core_eval) == DEFAULT_CORE_EVAL_SHA256
    # the share of core prompts in the PPO pool is carved after the demos: any share, same demos
    assert _sha256(build_splits(*DEFAULT_SIZES, ppo_demo_family_share=0.0)["demos"]) == DEFAULT_DEMOS_SHA256
    assert _sha256(build_splits(*DEFAULT_SIZES, ppo_demo_family_share=0.9)["demos"]) == DEFAULT_DEMOS_SHA256


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_ppo_pool_share_from_demonstrated_families(share):
    s = build_splits("diminished", seed=0, **SIZES, ppo_demo_family_share=share)
    core = set(families_in("core"))
    from_core = [r for r in s["ppo_prompts"] if r["family"] in core]
    assert len(s["ppo_prompts"]) == SIZES["n_ppo_prompts"]
    assert len(from_core) == round(share * SIZES["n_ppo_prompts"])
    if share:
        assert _families(from_core) == core
    # fresh prompts: never a demonstration's, a calibration item's or an eval item's
    held = {_prompt(r) for part in ("demos", "calibration", "eval") for r in s[part]}
    assert not {_prompt(r) for r in from_core} & held


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_ppo_pool_share_bounds(share):
    with pytest.raises(ValueError, match="ppo_demo_family_share"):
        build_splits("minimum", seed=0, **SIZES, ppo_demo_family_share=share)


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
            assert r["report_group"] == FAMILY_REPORT_GROUPS[r["family"]]
            assert r["domain"] == ("in" if r["family"] in demo_families else "out")
    domains = lambda ov, group: {r["domain"] for r in splits[ov]["eval"] if r["group"] == group}
    assert domains("minimum", "prompt") == {"out"} and domains("medium", "prompt") == {"in"}
    assert domains("diminished", "heldout") == {"out"}


def test_shared_parts_are_stable_across_setups(splits):
    ids = lambda ov, part: [r["id"] for r in splits[ov][part]]
    assert ids("minimum", "eval") == ids("medium", "eval") == ids("diminished", "eval")
    assert ids("minimum", "ppo_prompts") == ids("medium", "ppo_prompts") == ids("diminished", "ppo_prompts")
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
