"""lm-evaluation-harness GSM8K (5-shot) and IFEval on the tiny model, offline, from local files."""

import json

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")

from srppo.data.records import DataError  # noqa: E402
from srppo.evaluation.lmeval import (  # noqa: E402
    GPQA,
    GPQA_COT,
    GPQA_FIELDS,
    GSM8K,
    IFEVAL,
    ensure_punkt_tab,
    run,
    write_tasks,
)

IFEVAL_ROWS = [
    {"key": 1, "prompt": "Write two sentences about rain. Do not use any commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 2, "prompt": "Describe a cat in lowercase letters only.",
     "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    {"key": 3, "prompt": "Answer in fewer than 3 sentences: what is snow?",
     "instruction_id_list": ["length_constraints:number_sentences"],
     "kwargs": [{"relation": "less than", "num_sentences": 3}]},
]


def gsm8k_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
             "answer": f"He has {i} + {i + 2} = {2 * i + 2} apples.\n#### {2 * i + 2}"}
            for i in range(offset, offset + n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def test_punkt_tab_is_built_offline_and_splits_sentences(tmp_path):
    source = ensure_punkt_tab(tmp_path / "nltk_data", [r["prompt"] for r in IFEVAL_ROWS])
    from nltk.tokenize import sent_tokenize, word_tokenize

    assert "built" in source or "punkt_tab" in source  # an installed punkt_tab is used as it is
    assert sent_tokenize("Dr. Smith went home. He slept well. It rained.") == [
        "Dr. Smith went home.", "He slept well.", "It rained."]
    assert word_tokenize("No commas, please.") == ["No", "commas", ",", "please", "."]


def gpqa_csv(path, n: int):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["Record ID", *GPQA_FIELDS])
        writer.writeheader()
        for i in range(n):
            writer.writerow({"Record ID": f"r{i}", "Question": f"Which gas do plants take in, case {i}?",
                             "Correct Answer": "carbon dioxide", "Incorrect Answer 1": "helium",
                             "Incorrect Answer 2": "neon", "Incorrect Answer 3": "argon"})
    return path


def test_gsm8k_ifeval_and_gpqa_run_offline_on_the_tiny_model(tmp_path, tiny_dir, offline):
    ensure_punkt_tab(tmp_path / "nltk_data", [r["prompt"] for r in IFEVAL_ROWS])
    tasks = write_tasks(tmp_path / "tasks", gsm8k_test=write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(3)),
                        gsm8k_train=write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(8, offset=10)),
                        ifeval=write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_ROWS), ifeval_max_tokens=16,
                        gsm8k_max_tokens=16, gpqa=gpqa_csv(tmp_path / "gpqa_main.csv", 4), gpqa_max_tokens=8)
    assert tasks == [GSM8K, IFEVAL, GPQA, GPQA_COT]
    results = run(str(tiny_dir), tmp_path / "tasks", tasks, batch_size=4)
    gsm, ife = results[GSM8K], results[IFEVAL]
    assert set(results[GPQA]) == {"acc", "acc_norm"} and 0.0 <= results[GPQA]["acc"] <= 1.0
    assert set(results[GPQA_COT]) == {"exact_match/strict-match", "exact_match/flexible-extract"}
    assert set(gsm) >= {"exact_match/strict-match", "exact_match/flexible-extract"}
    assert set(ife) >= {"prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc"}
    for value in [*gsm.values(), *ife.values()]:
        assert 0.0 <= value <= 1.0
    # a random tiny model answers no arithmetic; lowercase/no-comma checks can pass by chance
    assert gsm["exact_match/strict-match"] == 0.0


def test_bad_benchmark_file_is_named_before_any_model_loads(tmp_path):
    bad = tmp_path / "ifeval.jsonl"
    bad.write_text('{"key": 1, "prompt": "x", "kwargs": [{}]}\n')
    with pytest.raises(DataError, match=r"ifeval.jsonl row 1: field 'instruction_id_list' is missing"):
        write_tasks(tmp_path / "tasks", ifeval=bad)


def test_gpqa_copy_without_its_columns_is_named(tmp_path):
    bad = tmp_path / "gpqa.csv"
    bad.write_text("Question,Correct Answer\nq,a\n")
    with pytest.raises(DataError, match=r"gpqa.csv row 1: field 'Incorrect Answer 1' is missing"):
        write_tasks(tmp_path / "tasks", gpqa=bad)
