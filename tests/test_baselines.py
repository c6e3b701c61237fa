"""The baselines' pieces on fixed inputs: Bradley-Terry loss, checker-ranked pairs, the reward model's
read-out position, per-cell overrides, and the comparison table's statistics."""

import math
from types import SimpleNamespace

import pytest
import torch

from srppo.config.files import ConfigError, load_params, parse_overrides
from srppo.data.batch import collate, encode_response
from srppo.evaluation.compare import (
    collect,
    markdown,
    paired_difference,
    scores,
    summarise,
)
from srppo.methods.reward_model import (
    bradley_terry_loss,
    preference_pairs,
    save_reward_model,
)
from srppo.rollout.engine import Generation
from srppo.scoring.reward_model import load_reward_model, reward_scores


def test_bradley_terry_hand_numbers():
    loss, m = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["rm_accuracy"] == 0.5 and m["rm_margin"] == pytest.approx(0.5)


def test_preference_pairs_rank_by_the_checkers(tiny_dir):
    from srppo.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    rec = {"id": "k1", "messages": [{"role": "user", "content": "Use the word apple."}], "response": "An apple.",
           "checks": [{"kind": "include_keyword", "keyword": "apple"}]}
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    good, bad = Generation([1], enc("apple pie"), False), Generation([1], enc("a pear"), False)
    cfg = SimpleNamespace(preferences="checkers", include_demos=True, max_pairs_per_prompt=10)
    pairs = preference_pairs([rec], [[1]], [[good, bad]], tok, cfg, seed=0, source="demos.jsonl")
    # strict passes (quality 2) beat the failing sample; the two passing answers tie and make no pair
    assert len(pairs) == 2 and all(worse == bad.response_ids for _, _, worse in pairs)
    assert good.response_ids in [better for _, better, _ in pairs]
    cfg.max_pairs_per_prompt = 1
    assert len(preference_pairs([rec], [[1]], [[good, bad]], tok, cfg, 0, "demos.jsonl")) == 1
    with pytest.raises(ValueError, match=r"demos.jsonl row 1: field 'checks' is missing"):
        preference_pairs([{**rec, "checks": []}], [[1]], [[good, bad]], tok, cfg, 0, "demos.jsonl")


def test_preference_pairs_from_demonstrations_need_no_checkers(tiny_dir):
    from srppo.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    rec = {"id": "r1", "messages": [{"role": "user", "content": "Name a fruit."}], "response": "An apple."}
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    demo = encode_response(tok, rec["messages"], rec["response"], [1])
    samples = [Generation([1], enc("a pear"), False), Generation([1], demo, False), Generation([1], enc("x"), False)]
    cfg = SimpleNamespace(preferences="demonstrations", include_demos=True, max_pairs_per_prompt=10)
    pairs = preference_pairs([rec], [[1]], [samples], tok, cfg, seed=0, source="demos.jsonl")
    # the demonstration beats each sample that differs from it; a sample equal to it makes no pair
    assert sorted(worse for _, _, worse in pairs) == sorted([enc("a pear"), enc("x")])
    assert all(better == demo for _, better, _ in pairs)
    with pytest.raises(ValueError, match=r"demos.jsonl row 1: field 'response' is missing"):
        preference_pairs([{**rec, "response": ""}], [[1]], [samples], tok, cfg, 0, "demos.jsonl")


def test_reward_model_reads_the_last_response_token_whatever_the_padding(tiny_dir, tmp_path):
    from srppo.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    rm = load_reward_model(tiny_dir, torch.device("cpu"), torch.float32)
    assert float(rm.score.weight.abs().sum()) == 0.0  # a causal LM's body: the new head starts at zero
    torch.nn.init.normal_(rm.score.weight)
    prompt, response = [5, 6, 7], [8, 9, tok.eos_token_id]
    alone = reward_scores(rm, collate([prompt], [response], tok.pad_token_id))
    padded = reward_scores(rm, collate([prompt, prompt], [response, response + [10, 11, 12, 13]], tok.pad_token_id))
    assert padded[0].item() == pytest.approx(alone.item(), abs=1e-5)  # pad == EOS id here: not where it stops
    save_reward_model(rm, tok, tmp_path / "rm", {"train_pairs": 0})
    again = load_reward_model(tmp_path / "rm", torch.device("cpu"), torch.float32)
    assert torch.equal(again.score.weight, rm.score.weight)  # a trained head is kept


def test_overrides_are_yaml_values_on_dotted_keys(tmp_path):
    assert parse_overrides("runtime.seed=2 eval.models=[sft, spin] reward.model_path=a b/rm") == {
        "runtime": {"seed": 2}, "eval": {"models": ["sft", "spin"]}, "reward": {"model_path": "a b/rm"}}
    (tmp_path / "params.yaml").write_text("runtime: {seed: 0}\n")
    assert load_params(tmp_path / "params.yaml", "runtime.seed=3 ppo.kl_coef=0.5").ppo.kl_coef == 0.5
    with pytest.raises(ConfigError, match=r"with overrides .*runtime.sed"):
        load_params(tmp_path / "params.yaml", "runtime.sed=3")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_overrides("=3")
    with pytest.raises(ConfigError, match="reward.source='model' needs reward.model_path"):
        load_params(tmp_path / "params.yaml", "reward.source=model")


def _rows():
    base = {"setup": "minimum"}
    per_seed = {"sft": [40, 40, 40], "spin": [41, 39, 40], "srppo": [45, 44, 46]}
    return [{**base, "seed": s, "method": m, "IF strict": v[s], "Average": v[s]} for m, v in per_seed.items()
            for s in range(3)]


def test_paired_difference_and_verdicts():
    d = paired_difference(_rows(), "minimum", "sft")
    assert d["mean"] == 5.0 and d["std"] == 1.0 and d["n"] == 3
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, df=2)
    assert d["ci95"] == [round(5 - half, 2), round(5 + half, 2)] and d["verdict"] == "better"
    noisy = [dict(r) for r in _rows()]
    for r in noisy:
        if r["method"] == "srppo":
            r["Average"] = [30, 50, 41][r["seed"]]
    assert paired_difference(noisy, "minimum", "spin")["verdict"] == "within seed noise"
    table = markdown(_rows())
    assert "| **SRPPO** | 45.00 ± 1.00 | 45.00 ± 1.00 |" in table and "| SFT | +5.00 | 1.00 |" in table
    assert summarise(_rows())["minimum"]["spin"]["Average"] == {"mean": 40.0, "std": 1.0, "n": 3}


def test_scores_average_the_benchmarks_not_the_breakdown(tmp_path):
    result = {"strict_acc": 40.0, "loose_acc": 50.0, "in_domain_strict": 90.0, "out_domain_strict": 10.0,
              "arithmetic_em": 30.0, "benchmarks": {"srppo_gsm8k": {"exact_match": 0.2}},
              "alpaca_eval": {"win_rate": 12.0, "lc_win_rate": 14.0}}
    s = scores(result)
    assert s["gsm8k exact_match"] == pytest.approx(20.0) and s["AlpacaEval LC"] == 14.0
    assert s["Average"] == pytest.approx((40 + 50 + 30 + 20 + 12 + 14) / 6)
    cell = tmp_path / "medium-s4"
    cell.mkdir()
    (cell / "eval.json").write_text('{"srppo": {"strict_acc": 10.0}, "seconds": {"total": 3}}')
    assert collect(tmp_path) == [{"setup": "medium", "seed": 4, "method": "srppo", "IF strict": 10.0,
                                  "Average": 10.0}]
    # a cell outside the grid (an earlier run's seed or setup) stays out of the table
    assert collect(tmp_path, setups=["medium"], seeds=[0, 1]) == []
    assert collect(tmp_path, setups=["minimum"]) == [] and len(collect(tmp_path, seeds=[4])) == 1


def test_split_by_reward_keeps_the_top_and_an_equal_random_subset():
    import numpy as np

    from srppo.methods.datafilter import filter_report, split_by_reward

    demos = [{"id": f"d{i}", "family": "a" if i < 3 else "b"} for i in range(6)]
    rewards = np.array([0.5, 3.0, -1.0, 2.0, 0.0, 1.0])
    top, rand = split_by_reward(demos, rewards, 0.5, seed=0)
    assert [d["id"] for d in top] == ["d1", "d3", "d5"] and len(rand) == 3
    assert rand == split_by_reward(demos, rewards, 0.5, seed=0)[1] != split_by_reward(demos, rewards, 0.5, seed=3)[1]
    report = filter_report(demos, rewards, top)
    assert report["reward_mean_kept"] == 2.0 and report["threshold"] == 1.0
    assert report["families_kept"] == {"a": 1, "b": 2}
