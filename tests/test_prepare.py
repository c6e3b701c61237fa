"""The `prepare` step: testbed splits per overlap setup, real-file splits, and bad rows."""

import json

import pytest

from srppo.config.params import PrepareConfig
from srppo.data.prepare import describe, prepare
from srppo.data.records import DataError

SMALL = dict(n_demos=20, n_subset_demos=6, n_dilution_demos=10, n_ppo_prompts=12, n_calibration=4,
             n_eval_per_family=2)


@pytest.mark.parametrize("overlap, in_domain", [("minimum", 5), ("medium", 11), ("diminished", 11)])
def test_testbed_overlap_setups(overlap, in_domain):
    splits = prepare(PrepareConfig(overlap=overlap, **SMALL))
    stats = describe(splits)
    assert stats["eval"]["rows"] == 15 * 2
    assert len({r["family"] for r in splits["eval"] if r["domain"] == "in"}) == in_domain
    assert all(r["messages"][0] == {"role": "system", "content": "Follow the instruction exactly."}
               for name in splits for r in splits[name])
    assert all("response" not in r for r in splits["ppo_prompts"])
    train_prompts = {r["messages"][-1]["content"] for k in ("demos", "ppo_prompts", "calibration") for r in splits[k]}
    assert not train_prompts & {r["messages"][-1]["content"] for r in splits["eval"]}
    expected_demos = {"minimum": 20, "medium": 26, "diminished": 36}[overlap]
    assert stats["demos"]["rows"] == expected_demos


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
