"""AlpacaEval-style judging: preference parsing, the length-controlled win rate, instruction files.

The live endpoint test is in tests/test_vllm.py (a real `vllm serve` on 127.0.0.1).
"""

import json
import math

import pytest

from srppo.data.records import DataError


def test_judge_preference_from_logprobs_and_text():
    from srppo.evaluation.judge import letter_preference

    choice = {"logprobs": {"content": [{"top_logprobs": [{"token": "a", "logprob": math.log(0.6)},
                                                         {"token": " b", "logprob": math.log(0.2)},
                                                         {"token": "x", "logprob": math.log(0.2)}]}]}}
    assert letter_preference(choice, "a") == pytest.approx(0.75)
    assert letter_preference(choice, "b") == pytest.approx(0.25)
    assert letter_preference({"message": {"content": "B."}}, "b") == 1.0
    assert letter_preference({"message": {"content": "neither"}}, "a") is None


def test_length_controlled_win_rate_discounts_a_length_only_advantage():
    from srppo.evaluation.judge import length_controlled

    diffs = [d for d in range(-50, 51, 10)] * 4
    prefs = [1.0 if d > 0 else 0.0 if d < 0 else 0.5 for d in diffs]  # the judge only likes length
    raw = sum(prefs) / len(prefs)
    assert raw == pytest.approx(0.5)
    assert length_controlled(prefs, diffs) == pytest.approx(0.5, abs=0.02)
    longer = [d + 30 for d in diffs]  # same judge, the model is always longer: raw rises, LC does not
    prefs_longer = [1.0 if d > 0 else 0.0 if d < 0 else 0.5 for d in longer]
    assert sum(prefs_longer) / len(prefs_longer) > 0.7
    assert length_controlled(prefs_longer, longer) < 0.65
    assert length_controlled([1.0] * 8, [0.0] * 8) > 0.95  # better at equal length



def test_instruction_file_errors_name_the_row_and_field(tmp_path):
    from srppo.evaluation.judge import load_instructions

    path = tmp_path / "alpaca.jsonl"
    path.write_text(json.dumps({"prompt": "Say hi.", "ref": "Hello."}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    items = load_instructions(str(path), "ref", limit=1)
    assert items == [{"id": "1", "messages": [{"role": "user", "content": "Say hi."}], "instruction": "Say hi.",
                      "reference": "Hello."}]
    with pytest.raises(DataError, match=r"alpaca.jsonl row 2: field 'ref' is missing"):
        load_instructions(str(path), "ref", limit=None)
