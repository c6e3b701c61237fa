"""The reward diagnostic: its measures against hand-computed values and brute force, and one run of the stage
on tiny local models, with a real judge endpoint on 127.0.0.1 for the prompts that have no checker."""

import itertools
import json
import math
import re
import runpy
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from srppo.config.files import dump_params, validate
from srppo.data.prepare import prepare
from srppo.data.records import write_jsonl
from srppo.evaluation.diagnose import (
    best_of_k,
    choose_prompts,
    family_summary,
    kl_best_of_k,
    length_regressed_auc,
    pass_at_k,
    reward_auc,
    verdict,
)


def test_auc_counts_ties_half_and_needs_both_outcomes():
    # pairs (pass, fail): 3>2, 3>1, 2=2 (half), 2>1
    assert reward_auc([3, 2, 2, 1], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert reward_auc([1, 2, 3], [False, False, False]) is None
    assert reward_auc([1, 2, 3], [True, True, True]) is None


def test_length_regressed_auc_removes_what_length_explains():
    lengths = [1, 2, 3, 4, 1, 2, 3, 4]
    passed = [True, False, True, False, False, True, False, True]  # one pass per length: uncorrelated
    rewards = [n + p for n, p in zip(lengths, passed)]
    # raw: passes [2, 4, 3, 5] against fails [2, 4, 1, 3], ties half: 1.5 + 3.5 + 2.5 + 4 of 16
    assert reward_auc(rewards, passed) == pytest.approx(11.5 / 16)
    assert length_regressed_auc(rewards, lengths, passed) == pytest.approx(1.0)  # what is left is the pass
    longer_passes = [n > 2 for n in lengths]
    assert reward_auc(lengths, longer_passes) == 1.0  # a pure length reward looks perfect raw ...
    assert length_regressed_auc(lengths, lengths, longer_passes) == pytest.approx(0.5)  # ... and is nothing
    assert length_regressed_auc([1.0, 2.0, 3.0], [5, 5, 5], [False, True, True]) == pytest.approx(1.0)  # one length


def test_pass_at_k_is_chen_et_al_unbiased_estimator():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert pass_at_k(4, 3, 2) == 1.0  # fewer fails than k: every k-subset holds a pass
    assert pass_at_k(8, 0, 8) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def brute_best_of_k(rewards, passed, k):
    """Every k-subset, its best reward's samples' mean pass (a tie broken uniformly)."""
    values = []
    for subset in itertools.combinations(range(len(rewards)), k):
        top = max(rewards[i] for i in subset)
        values.append(np.mean([passed[i] for i in subset if rewards[i] == top]))
    return float(np.mean(values))


def test_best_of_k_by_hand_and_by_brute_force():
    rewards, passed = [1, 3, 3, 2], [1, 0, 1, 0]
    assert best_of_k(rewards, passed, 1) == pytest.approx(0.5)  # k=1: the pass rate
    # the 6 pairs: {1,3a}: 0, {1,3b}: 1, {1,2}: 0, {3a,3b}: tie 0.5, {3a,2}: 0, {3b,2}: 1
    assert best_of_k(rewards, passed, 2) == pytest.approx(2.5 / 6)
    assert best_of_k(rewards, passed, 4) == pytest.approx(0.5)  # n = k: the tied best pair's mean
    rng = np.random.default_rng(0)
    for n in (5, 8):
        rewards = rng.integers(0, 4, n).astype(float).tolist()  # few values: many ties
        passed = rng.integers(0, 2, n).tolist()
        for k in range(1, n + 1):
            assert best_of_k(rewards, passed, k) == pytest.approx(brute_best_of_k(rewards, passed, k)), (n, k)


def test_kl_of_best_of_k():
    assert kl_best_of_k(1) == 0.0
    assert kl_best_of_k(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_k(8) == pytest.approx(math.log(8) - 7 / 8)


def test_verdict_rule_and_a_family_summary():
    assert [verdict(6, 20, 5), verdict(-6, 20, 5), verdict(2, 20, 5), verdict(0, 3, 5)] == [
        "toward", "away", "flat", "undecided"]
    # two prompts of 4 samples; the reward ranks every pass above every fail of its prompt
    rows = pd.DataFrame({"id": ["a"] * 4 + ["b"] * 4, "domain": "out", "length": [5, 6, 7, 8] * 2,
                         "reward": [4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 0.0],
                         "passed": [True, False, False, False, False, False, True, False]})
    s = family_summary(rows, [1, 2, 4], margin=5.0)
    assert s["pass_rate"] == 25.0 and s["best_of_k"]["1"] == 25.0 and s["pass_at_k"]["1"] == 25.0
    assert s["best_of_k"]["4"] == s["pass_at_k"]["4"] == 100.0  # a perfect ranker is the checker's best-of-k
    assert s["best_of_k"]["2"] == pytest.approx(100 * 3 / 6)  # C(4,2)=6 pairs, 3 hold the pass
    assert s["auc"] == pytest.approx(11.5 / 12, abs=1e-4)  # pooled over prompts: b's pass (3.0) ties a fail of a
    assert (s["gain"], s["room"], s["verdict"]) == (75.0, 75.0, "toward")
    assert s["kl"]["4"] == pytest.approx(kl_best_of_k(4), abs=1e-4)
    unjudged = rows.assign(passed=None)
    assert family_summary(unjudged, [1, 2], 5.0)["verdict"] == "unchecked"


def test_prompts_are_drawn_per_family_from_the_seed():
    records = [{"id": f"{f}{i}", "family": f} for f in "xyz" for i in range(5)] + [{"id": "w0", "family": "w"}]
    one, again = choose_prompts(records, 2, seed=3), choose_prompts(records, 2, seed=3)
    assert one == again and len(one) == 7  # 2 + 2 + 2 + the only one of w
    assert [r["family"] for r in one] == sorted(r["family"] for r in one if r["family"] != "w") + ["w"]
    assert choose_prompts(records, 2, seed=4) != one


@contextmanager
def judge_server():
    """An OpenAI-compatible chat endpoint on 127.0.0.1 whose judge prefers the longer output (text answer)."""
    calls = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            a, b = re.search(r"# Output a\n(.*)\n\n# Output b\n(.*)\n\nAnswer", prompt, re.DOTALL).groups()
            calls.append(self.path)
            answer = json.dumps({"choices": [{"message": {"content": "a" if len(a) >= len(b) else "b"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def eval_items(params) -> list[dict]:
    """Three testbed families (3 prompts each), one family with references but no checker, one with neither."""
    items = prepare(params.prepare)["eval"]
    families = list(dict.fromkeys(r["family"] for r in items))[:3]
    items = [r for r in items if r["family"] in families]
    system = items[0]["messages"][0]
    for i in range(3):
        user = {"role": "user", "content": f"Write a line about boats, number {i}."}
        items.append({"id": f"ref-{i}", "family": "open_ref", "domain": "out", "messages": [system, user],
                      "checks": [], "response": "Boats float."})
        items.append({"id": f"open-{i}", "family": "open", "domain": "out", "messages": [system, user], "checks": []})
    return items, families


def test_the_stage_writes_consistent_samples_table_plot_and_metrics(tmp_path, monkeypatch, tiny_dir, tiny_sft_dir):
    small = {"runtime": {"device": "cpu"},
             "prepare": {"n_demos": 8, "n_ppo_prompts": 4, "n_calibration": 2, "n_eval_per_family": 3},
             "rollouts": {"batch_size": 8, "score_batch_size": 8},
             "diagnose": {"n_prompts_per_family": 2, "samples_per_prompt": 4, "ks": [1, 2, 4], "max_new_tokens": 8}}
    items, testbed = eval_items(validate(small))
    write_jsonl(tmp_path / "eval.jsonl", items)
    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(ROOT / "stages" / "diagnose.py"), run_name="diagnose")["main"]
    with judge_server() as (endpoint, calls):
        small["eval"] = {"judge": {"endpoint": endpoint, "model": "local-judge", "api_key_env": "SRPPO_TEST_NO_KEY"}}
        (tmp_path / "params.yaml").write_text(dump_params(validate(small)))
        main(str(tiny_dir), str(tiny_sft_dir), "eval.jsonl", "out", "metrics.json", "report.json")

    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert len(samples) == 5 * 2 * 4 and len(calls) == 2 * 4  # open_ref's samples went to the judge
    assert set(calls) == {"/v1/chat/completions"}
    assert list(samples["sample"][:4]) == [0, 1, 2, 3] and samples.groupby("id").size().eq(4).all()
    assert set(samples.columns) >= {"id", "family", "sample", "reward", "length", "truncated", "passed", "response"}
    by = dict(tuple(samples.groupby("family")))
    assert by["open"]["passed"].isna().all() and by["open_ref"]["verdict_by"].eq("judge").all()
    assert by[testbed[0]]["verdict_by"].eq("checker").all()
    ref = by["open_ref"]
    differ = ref["response"].str.len() != len("Boats float.")
    assert (ref["passed"][differ] == (ref["response"].str.len() > len("Boats float."))[differ]).all()
    assert (samples["length"] <= 8).all() and (samples["length"][samples["truncated"]] == 8).all()

    report = json.loads((tmp_path / "report.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    families = report["families"]
    assert list(families) == [*testbed, "open_ref", "open"]
    assert families["open"]["verdict"] == "unchecked" and "best_of_k" not in families["open"]
    for name in [*testbed, "open_ref"]:
        s, rows = families[name], by[name]
        assert s["pass_rate"] == pytest.approx(100 * rows["passed"].astype(bool).mean(), abs=0.01)
        assert s["best_of_k"]["1"] == pytest.approx(s["pass_rate"], abs=0.01)  # one sample: no choice
        assert s["pass_at_k"]["1"] == pytest.approx(s["pass_rate"], abs=0.01)
        assert s["best_of_k"]["4"] <= s["pass_at_k"]["4"] + 1e-9  # no ranker beats the checker's own
        assert s["verdict"] in ("toward", "away", "flat", "undecided")
    assert set(metrics) == {"auc_mean", "families_toward", "out_domain_families_gaining_10"}
    assert report["families_toward"] == metrics["families_toward"] and report["seconds"]["total"] > 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert all(f"| {name} |" in table for name in families) and "best-of-4" in table
    assert (tmp_path / "out" / "diagnose.png").stat().st_size > 1000
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["diagnose"]["ks"] == [1, 2, 4]


def test_a_k_larger_than_the_samples_is_refused_naming_the_key():
    from srppo.config.files import ConfigError

    with pytest.raises(ConfigError, match="diagnose.ks"):
        validate({"diagnose": {"samples_per_prompt": 4, "ks": [1, 8]}})
