"""Loaders for real dataset formats (srppo.data.loaders) and the record schema helpers (srppo.data.records).

Every fixture is a tiny file written into tmp_path; nothing here reads /work/shared or the network.
"""

from __future__ import annotations

import json
import pickle

import pytest

from srppo.data.loaders import FORMATS, load_records
from srppo.data.records import (DataError, check_unique_ids, read_jsonl, validate_demo, validate_prompt,
                                write_jsonl)


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def msg(role, content):
    return {"role": role, "content": content}


# ------------------------------------------------------------------ formats


def test_messages_format(tmp_path):
    f = jsonl(tmp_path / "tulu.jsonl", [
        {"id": "a", "dataset": "flan", "messages": [msg("system", "Be brief."), msg("user", "Hi"),
                                                    msg("assistant", "Hello"), msg("user", "2+2?"),
                                                    msg("assistant", "4")]},
        {"messages": [msg("system", ""), msg("user", "Q"), msg("assistant", "A")], "source": "lima"},
    ])
    a, b = load_records(str(f), "messages")
    assert a == {"id": "a", "messages": [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello"),
                                         msg("user", "2+2?")], "response": "4", "family": "tulu", "checks": []}
    assert b == {"id": "lima-000002", "messages": [msg("user", "Q")], "response": "A", "family": "lima",
                 "checks": []}
    assert load_records(str(f), "messages", family="mix")[1]["id"] == "mix-000002"


def test_alpaca_format_json_array(tmp_path):
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps([
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "And now?", "output": "Done.", "history": [["First?", "Yes."]], "system": "Sys"},
    ], indent=2), encoding="utf-8")
    recs = load_records(str(f), "alpaca")
    assert recs[0] == {"id": "alpaca-000001", "messages": [msg("user", "Add.\n\n2 and 3")], "response": "5",
                       "family": "alpaca", "checks": []}
    assert recs[1]["messages"] == [msg("user", "Say hi.")]
    assert recs[2]["messages"] == [msg("system", "Sys"), msg("user", "First?"), msg("assistant", "Yes."),
                                   msg("user", "And now?")]


def test_prompt_format_variants(tmp_path):
    f = jsonl(tmp_path / "prompts.jsonl", [
        {"prompt_id": 7, "prompt": "Write a poem.", "chosen": "x"},
        {"instruction": "Translate", "input": "bonjour"},
        {"id": "m", "messages": [msg("user", "Hi"), msg("assistant", "Hello")]},
    ])
    p1, p2, p3 = load_records(str(f), "prompt")
    assert p1 == {"id": "7", "messages": [msg("user", "Write a poem.")], "family": "ultrafeedback", "checks": []}
    assert p2["messages"] == [msg("user", "Translate\n\nbonjour")] and p2["id"] == "ultrafeedback-000002"
    assert p3["messages"] == [msg("user", "Hi")] and "response" not in p3


def test_prompt_format_csv(tmp_path):
    f = tmp_path / "qa.csv"
    f.write_text('question,label\nWhy is the sky green?,1\n"Multi\nline?",0\n', encoding="utf-8")
    recs = load_records(str(f), "prompt", family="falseqa")
    assert [r["messages"][0]["content"] for r in recs] == ["Why is the sky green?", "Multi\nline?"]
    assert [r["id"] for r in recs] == ["falseqa-000001", "falseqa-000002"]


def test_gsm8k_format(tmp_path):
    f = jsonl(tmp_path / "test.jsonl", [
        {"question": "How many?", "answer": "She has 400 + 600 = <<400+600=1000>>1000.\n#### 1,000"},
        {"question": "Half of 5?", "answer": "5 / 2 = 2.5\n#### 2.5"},
    ])
    a, b = load_records(str(f), "gsm8k")
    assert a == {"id": "gsm8k-000001", "messages": [msg("user", "How many?")],
                 "response": "She has 400 + 600 = <<400+600=1000>>1000.\nThe answer is 1000.",
                 "family": "gsm8k", "checks": [{"kind": "final_answer", "value": 1000}]}
    assert b["checks"] == [{"kind": "final_answer", "value": 2.5}] and b["response"].endswith("The answer is 2.5.")


def test_ifeval_format_keeps_kwargs_exact(tmp_path):
    f = jsonl(tmp_path / "input_data.jsonl", [
        {"key": 1000, "prompt": "No commas please.", "instruction_id_list": ["punctuation:no_comma",
         "length_constraints:number_words"], "kwargs": [{}, {"relation": "at least", "num_words": 300}]},
        {"key": 1001, "prompt": "Three highlights.", "instruction_id_list": ["detectable_format:"
         "number_highlighted_sections"], "kwargs": [{"num_highlights": 3}]},
    ])
    a, b = load_records(str(f), "ifeval")
    assert a == {"id": "1000", "messages": [msg("user", "No commas please.")], "family": "ifeval", "checks": [
        {"kind": "ifeval", "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
         "kwargs": [{}, {"relation": "at least", "num_words": 300}], "prompt": "No commas please."}]}
    assert b["checks"][0]["kwargs"] == [{"num_highlights": 3}] and "response" not in b


def test_ifeval_checks_score_with_ifevals_own_checkers():
    pytest.importorskip("lm_eval", reason="IFEval's checkers come with the eval extra")
    from srppo.testbed import check_response

    check = {"kind": "ifeval", "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
             "kwargs": [{}, {}], "prompt": "Answer in lowercase without commas."}
    assert check_response("all lowercase and no commas here", [check])["strict"]
    assert not check_response("all lowercase, but a comma", [check])["strict"]
    assert not check_response("Capital letters here", [check])["strict"]
    # loose scoring, as in IFEval: a first line like "Sure:" is dropped before checking
    assert check_response("**all lowercase**", [check])["loose"]


def test_records_format_full_flat_and_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [
        {"id": "d1", "messages": [msg("user", "Q")], "response": "A", "family": "alpaca", "checks": []},
        {"id": "g1", "prompt": "2+2?", "response": "4", "answer": "4"},
        {"id": "p1", "prompt": "Just a prompt"},
    ]
    f = jsonl(tmp_path / "recs.jsonl", rows)
    d1, g1, p1 = load_records(str(f), "records")
    assert d1 == rows[0]
    assert g1 == {"id": "g1", "response": "4", "answer": "4", "messages": [msg("user", "2+2?")],
                  "family": "records", "checks": []}
    assert p1["messages"] == [msg("user", "Just a prompt")] and "response" not in p1
    pq = tmp_path / "demos.parquet"
    pd.DataFrame([rows[0], {**rows[0], "id": "d2", "response": "B"}]).to_parquet(pq)
    assert [r["id"] for r in load_records(str(pq), "records")] == ["d1", "d2"]


def test_identical_rows_are_dropped_by_content_whatever_their_ids(tmp_path, capsys):
    # two copies of one example without ids get different generated ids: by id they are two rows, and the
    # calibration split could hold one while the SFT demonstrations hold the other
    row = {"prompt": "Name a color.", "response": "Blue."}
    f = jsonl(tmp_path / "d.jsonl", [row, {"prompt": "Say hi.", "response": "Hi."}, row, {**row, "id": "x9"}])
    recs = load_records(str(f), "records")
    assert [r["response"] for r in recs] == ["Blue.", "Hi."]
    err = capsys.readouterr().err
    assert f"{f}: dropped 2 row(s) whose messages and response repeat an earlier row's ({f} row 3 repeats row 1; " \
           f"{f} row 4 repeats row 1)" in err


def test_a_records_file_row_without_a_response_is_named_by_its_own_row(tmp_path):
    # a `records` file can hold prompts; as prepare.demos every row needs a response, and the error names the
    # row of the file the user wrote (not its position among the prepared demonstrations)
    from srppo.config.params import PrepareConfig
    from srppo.data.prepare import prepare

    rows = [{"id": f"d{i}", "prompt": f"Q{i}", "response": f"A{i}"} for i in range(1, 10)]
    del rows[6]["response"]
    f = jsonl(tmp_path / "demos.jsonl", rows)
    cfg = PrepareConfig(source="files", n_calibration=2, demos={"path": str(f), "format": "records"},
                        prompts={"path": str(f), "format": "prompt"})
    with pytest.raises(DataError, match=rf"^{f} row 7: field 'response' is missing$"):
        prepare(cfg)


def test_written_records_round_trip(tmp_path):
    recs = [{"id": "x", "messages": [msg("user", "Q é")], "response": "A", "family": "f",
             "checks": [{"kind": "final_answer", "value": 3}]}]
    write_jsonl(tmp_path / "out" / "r.jsonl", recs)
    assert read_jsonl(tmp_path / "out" / "r.jsonl") == recs
    assert load_records(str(tmp_path / "out" / "r.jsonl"), "records") == recs


def test_directory_source_picks_split_files(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"question": "Q1", "answer": "#### 1"}])
    jsonl(tmp_path / "test.jsonl", [{"question": "Q2", "answer": "#### 2"}, {"question": "Q3", "answer": "#### 3"}])
    recs = load_records(str(tmp_path), "gsm8k", split="test")
    assert [r["checks"][0]["value"] for r in recs] == [2, 3]


def test_mixed_type_column_falls_back_to_prescanned_rows(tmp_path):
    f = jsonl(tmp_path / "mixed.jsonl", [{"id": 1, "prompt": "a"}, {"id": "two", "prompt": "b"}])
    assert [r["id"] for r in load_records(str(f), "prompt")] == ["1", "two"]


# ------------------------------------------------------------------ limit / seed


def test_limit_is_deterministic_and_keeps_row_ids(tmp_path):
    f = jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(50)])
    a = load_records(str(f), "prompt", limit=10, seed=1)
    assert a == load_records(str(f), "prompt", limit=10, seed=1)
    assert len(a) == 10 and len({r["id"] for r in a}) == 10
    assert [r["id"] for r in a] != [r["id"] for r in load_records(str(f), "prompt", limit=10, seed=2)]
    for r in a:  # default ids come from the original row, not the sample position
        assert r["id"] == f"ultrafeedback-{int(r['messages'][0]['content'][1:]) + 1:06d}"
    assert len(load_records(str(f), "prompt", limit=500)) == 50
    assert load_records(str(f), "prompt", limit=0) == []


def test_limit_validates_only_rows_taken(tmp_path):
    f = jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(20)] + [{"prompt": ""}])
    with pytest.raises(DataError):
        load_records(str(f), "prompt")
    taken = load_records(str(f), "prompt", limit=3, seed=0)
    assert all(r["messages"][0]["content"] for r in taken)


# ------------------------------------------------------------------ errors


def _write_lines(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


GOOD_TULU = json.dumps({"messages": [msg("user", "Q"), msg("assistant", "A")]}).encode()
GOOD_ALPACA = json.dumps({"instruction": "I", "output": "O"}).encode()
GOOD_REC = json.dumps({"id": "r1", "messages": [msg("user", "Q")], "response": "A", "family": "f",
                       "checks": []}).encode()

ERROR_CASES = {
    "missing field": ("alpaca", [GOOD_ALPACA, GOOD_ALPACA, json.dumps({"instruction": "I"}).encode()],
                      3, "'output' is missing"),
    "empty response": ("records", [GOOD_REC, json.dumps({"id": "r2", "prompt": "Q", "response": " "}).encode()],
                       2, "'response' is empty"),
    "wrong type": ("prompt", [json.dumps({"prompt": 5}).encode()], 1, "'prompt' must be a string, got int"),
    "wrong content type": ("messages", [GOOD_TULU, json.dumps({"messages": [msg("user", ["x"]),
                           msg("assistant", "A")]}).encode()], 2, "'messages[0].content' must be a string"),
    "bad role": ("records", [json.dumps({"id": "r", "messages": [msg("robot", "Q")], "family": "f",
                 "checks": []}).encode()], 1, "'messages[0].role' must be one of"),
    "invalid JSON line": ("messages", [GOOD_TULU, GOOD_TULU, b'{"messages": [', GOOD_TULU], 3, "not valid JSON"),
    "non-UTF-8 bytes": ("messages", [GOOD_TULU, b'{"messages": "\xff\xfe"}'], 2, "not valid UTF-8"),
    "duplicate ids": ("records", [GOOD_REC, GOOD_REC.replace(b'"r1"', b'"r2"'), GOOD_REC], 3,
                      "'id' duplicates id 'r1' of"),
    "no final assistant turn": ("messages", [GOOD_TULU, json.dumps({"messages": [msg("user", "Q"),
                                msg("assistant", "A"), msg("user", "Q2")]}).encode()], 2,
                                "'messages' has no final assistant turn"),
    "empty final assistant turn": ("messages", [json.dumps({"messages": [msg("user", "Q"),
                                   msg("assistant", "")]}).encode()], 1, "'messages[1].content' is empty"),
    "gsm8k without ####": ("gsm8k", [json.dumps({"question": "Q", "answer": "42"}).encode()], 1,
                           "'answer' has no final '#### <number>' line"),
    "ifeval kwargs length": ("ifeval", [json.dumps({"key": 1, "prompt": "P", "instruction_id_list": ["a:b"],
                             "kwargs": []}).encode()], 1, "'kwargs' must be a list of objects"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_malformed_rows_name_file_row_and_field(tmp_path, case):
    fmt, lines, row, expected = ERROR_CASES[case]
    f = _write_lines(tmp_path / "bad_data.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_records(str(f), fmt)
    message = str(info.value)
    assert message.startswith(f"{f} row {row}: "), message
    assert expected in message, message
    if case == "duplicate ids":
        assert message.endswith(f"{f} row 1"), message


def test_invalid_json_array_file(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[\n  {"instruction": "I", "output": "O"},\n  {"instruction": \n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json: is not valid JSON: .* \(line 4"):
        load_records(str(f), "alpaca")


def test_json_array_rows_are_numbered(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"instruction": "I", "output": "O"}, {"instruction": "I", "output": ""}]))
    with pytest.raises(DataError, match=r"a\.json row 2: field 'output' is empty"):
        load_records(str(f), "alpaca")


def test_unknown_format_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError) as info:
        load_records(str(tmp_path / "x.jsonl"), "sharegpt")
    assert not isinstance(info.value, DataError)
    for fmt in FORMATS:
        assert fmt in str(info.value)


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub must not be tried"))
    with pytest.raises(DataError, match="demos.jsonl: does not exist"):
        load_records(str(tmp_path / "demos.jsonl"), "records")


def test_empty_file_is_an_error(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: contains no records"):
        load_records(str(f), "prompt")


def test_hub_failure_is_explained(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_records("someorg/some-dataset", "messages")
    message = str(info.value)
    assert message.startswith("someorg/some-dataset: ") and "hub dataset id" in message
    assert "offline?" in message and "local" in message and "Couldn't reach the Hub" in message


def test_hub_id_goes_through_load_dataset_with_split(monkeypatch):
    import datasets

    calls = []

    def fake(source, split=None, **kwargs):
        calls.append((source, split, kwargs))
        return datasets.Dataset.from_list([{"question": "Q", "answer": "x\n#### 7"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    recs = load_records("openai/gsm8k", "gsm8k", split="test")
    assert calls == [("openai/gsm8k", "test", {})]
    assert recs[0]["checks"] == [{"kind": "final_answer", "value": 7}]


def test_local_files_also_go_through_load_dataset(tmp_path, monkeypatch):
    import datasets

    real, calls = datasets.load_dataset, []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    f = jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    load_records(str(f), "prompt")
    assert calls == [(("json",), {"data_files": str(f), "split": "train"})]


# ------------------------------------------------------------------ records helpers


def test_validators_and_unique_ids():
    good = {"id": "a", "messages": [msg("user", "Q")], "family": "f", "checks": []}
    assert validate_prompt(good, "s.jsonl", 4) is good
    with pytest.raises(DataError, match=r"s\.jsonl row 4: field 'response' is missing"):
        validate_demo(good, "s.jsonl", 4)
    with pytest.raises(DataError, match=r"row 2: field 'messages\[1\]\.role' must be 'user'"):
        validate_prompt({**good, "messages": [msg("user", "Q"), msg("assistant", "A")]}, "s.jsonl", 2)
    with pytest.raises(DataError, match=r"row 3: field 'id' must be a string, got int"):
        validate_prompt({**good, "id": 3}, "s.jsonl", 3)
    with pytest.raises(DataError, match=r"checks\[0\]\.value' must be a number"):
        validate_prompt({**good, "checks": [{"kind": "final_answer", "value": "7"}]}, "s.jsonl", 1)
    with pytest.raises(DataError, match=r"s\.jsonl row 3: field 'id' duplicates id 'a' of row 1"):
        check_unique_ids([good, {**good, "id": "b"}, good], "s.jsonl")


def test_data_error_pickles():
    err = pickle.loads(pickle.dumps(DataError("d.jsonl", 17, "response", "is empty")))
    assert str(err) == "d.jsonl row 17: field 'response' is empty" and err.row == 17 and err.field == "response"
    assert str(pickle.loads(pickle.dumps(DataError("preformatted message")))) == "preformatted message"


def test_read_jsonl_errors(tmp_path):
    f = _write_lines(tmp_path / "r.jsonl", [b'{"a": 1}', b"", b"[1, 2]"])
    with pytest.raises(DataError, match=r"r\.jsonl row 3: must be a JSON object, got list"):
        read_jsonl(f)


def test_write_jsonl_is_atomic(tmp_path):
    target = tmp_path / "out.jsonl"
    assert write_jsonl(target, [{"id": "1"}, {"id": "2"}]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    before = target.read_bytes()

    def records():
        yield {"id": "3"}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, records())
    with pytest.raises(TypeError):
        write_jsonl(target, [{"id": "4", "bad": {1, 2}}])
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
