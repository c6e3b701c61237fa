"""The `prepare` step: testbed splits per overlap setup, real-file splits, and bad rows."""

import json

import pytest
from conftest import ROOT

from srppo.config.files import apply_preset
from srppo.config.params import PrepareConfig
from srppo.data.prepare import describe, prepare
from srppo.data.records import DataError
from srppo.testbed import FAMILIES, families_in, families_reported_as

SMALL = dict(n_demos=20, n_subset_demos=6, n_dilution_demos=10, n_ppo_prompts=12, n_calibration=4,
             n_eval_per_family=2)


N_CORE = len(families_in("core"))
N_SUBSET = min(SMALL["n_subset_demos"], len(families_in("prompt")))  # prompt families with a subset demo


@pytest.mark.parametrize("overlap, in_domain", [("minimum", N_CORE), ("medium", N_CORE + N_SUBSET),
                                                ("diminished", N_CORE + N_SUBSET)])
def test_testbed_overlap_setups(overlap, in_domain):
    splits = prepare(PrepareConfig(overlap=overlap, **SMALL))
    stats = describe(splits)
    assert stats["eval"]["rows"] == len(FAMILIES) * 2
    assert stats["eval"]["report_groups"]["compositional"] == 2 * len(families_reported_as("compositional"))
    assert len({r["family"] for r in splits["eval"] if r["domain"] == "in"}) == in_domain
    assert all(r["messages"][0] == {"role": "system", "content": "Follow the instruction exactly."}
               for name in splits for r in splits[name])
    assert all("response" not in r for r in splits["ppo_prompts"])
    train_prompts = {r["messages"][-1]["content"] for k in ("demos", "ppo_prompts", "calibration") for r in splits[k]}
    assert not train_prompts & {r["messages"][-1]["content"] for r in splits["eval"]}
    expected_demos = {"minimum": 20, "medium": 26, "diminished": 36}[overlap]
    assert stats["demos"]["rows"] == expected_demos
    # prepare.ppo_demo_family_share (default 0.25) of the pool comes from the demonstrated families
    assert sum(r["family"] in families_in("core") for r in splits["ppo_prompts"]) == 3


def test_fidelity_preset_builds_with_enough_items_per_group():
    cfg = apply_preset(ROOT / "configs" / "fidelity.yaml").prepare
    assert cfg.n_eval_per_family >= 40 and cfg.n_ppo_prompts >= 2048
    splits = prepare(cfg)  # raises if a family's template space cannot supply that many distinct prompts
    assert len(splits["ppo_prompts"]) == cfg.n_ppo_prompts
    by_group = describe(splits)["eval"]["report_groups"]
    assert by_group["arithmetic"] >= 100 and by_group["compositional"] >= 200
    assert all(n >= 40 for n in describe(splits)["eval"]["families"].values())


def _row(family, report_group, domain, strict, arithmetic=False):
    return {"family": family, "report_group": report_group, "domain": domain, "arithmetic": arithmetic,
            "strict": strict, "loose": strict, "tokens": 5, "truncated": False}


def test_eval_summary_per_report_group():
    from srppo.evaluation.testbed_eval import HEADLINE, markdown_table, summarise

    rows = [_row("uppercase", "in_domain", "in", True), _row("uppercase", "in_domain", "in", False),
            _row("combo_upper_end", "compositional", "out", True),
            _row("combo_lower_end", "compositional", "out", False),
            _row("combo_lower_end", "compositional", "out", False),
            _row("quote_wrap", "control", "out", False),
            _row("arithmetic_two_step", "arithmetic", "in", True, arithmetic=True)]
    s = summarise(rows)
    assert (s["in_domain_strict"], s["compositional_strict"], s["control_strict"]) == (50.0, 33.33, 0.0)
    assert s["out_domain_strict"] == 25.0 and s["arithmetic_em"] == 100.0 and s["strict_acc"] == 33.33
    assert s["families"]["combo_lower_end"]["report_group"] == "compositional"
    # medium/diminished: a compositional family in the demonstrations counts as in-domain, not compositional
    demonstrated = [{**r, "domain": "in"} if r["family"] == "combo_upper_end" else r for r in rows]
    s = summarise(demonstrated)
    assert s["in_domain_strict"] == round(100 * 2 / 3, 2) and s["compositional_strict"] == 0.0
    assert summarise([_row("ifeval", "", "out", True)])["compositional_strict"] is None  # real-data rows
    table = markdown_table({"sft": s})
    assert all(label in table for _, label in HEADLINE)
    assert "| combo_lower_end | out | compositional | 0.00 |" in table


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_files_source_and_a_malformed_row(tmp_path):
    demos = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(8)]
    prompts = [{"prompt": f"p{i}"} for i in range(5)]
    cfg = PrepareConfig(source="files", n_calibration=3, system_prompt=None,
                        demos={"path": _write(tmp_path / "demos.jsonl", demos), "format": "messages"},
                        prompts={"path": _write(tmp_path / "prompts.jsonl", prompts), "format": "prompt"},
                        eval_sets={"mini": {"path": str(tmp_path / "prompts.jsonl"), "format": "prompt"}})
    splits = prepare(cfg)
    assert (len(splits["demos"]), len(splits["calibration"]), len(splits["ppo_prompts"])) == (5, 3, 5)
    assert {r["family"] for r in splits["eval"]} == {"mini"}

    demos[5]["messages"][1]["content"] = ""
    _write(tmp_path / "demos.jsonl", demos)
    with pytest.raises(DataError) as err:
        prepare(cfg)
    assert "demos.jsonl" in str(err.value) and "row 6" in str(err.value)


def test_copies_of_a_demonstration_never_land_on_both_sides_of_the_calibration_split(tmp_path):
    # identical rows without ids got different generated ids: by id two rows, so the held-out calibration set
    # could hold one copy while the SFT demonstrations held another; also across the medium overlap's files
    rows = [{"prompt": f"Q{i % 6}", "response": f"A{i % 6}"} for i in range(24)]  # 6 examples, 4 copies each
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "Q0", "response": "A0"}) + "\n"
                                      + json.dumps({"prompt": "Q9", "response": "A9"}) + "\n")
    cfg = PrepareConfig(source="files", overlap="medium", n_calibration=2, system_prompt=None,
                        demos={"path": str(tmp_path / "d.jsonl"), "format": "records"},
                        subset_demos={"path": str(tmp_path / "s.jsonl"), "format": "records"},
                        prompts={"path": str(tmp_path / "d.jsonl"), "format": "prompt"},
                        eval_sets={"e": {"path": str(tmp_path / "d.jsonl"), "format": "prompt"}})
    splits = prepare(cfg)
    content = lambda r: (r["messages"][-1]["content"], r["response"])
    demos, held = [content(r) for r in splits["demos"]], [content(r) for r in splits["calibration"]]
    assert len(held) == 2 and not set(held) & set(demos)
    assert sorted(demos + held) == sorted({content(r) for r in splits["demos"] + splits["calibration"]})
    assert ("Q9", "A9") in demos  # the subset's new example is kept, its copy of Q0 is not
