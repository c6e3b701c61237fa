"""The baselines' pieces on fixed inputs: Bradley-Terry loss, checker-ranked pairs, the reward model's
read-out position, per-cell overrides, and the comparison table's statistics."""

import json
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
    paired_differences,
    summary_json,
    scores,
    summarise,
)
from srppo.methods.reward_model import (
    answer_scores,
    bradley_terry_loss,
    match_spread,
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


def test_a_reward_model_rescaled_to_a_spread_keeps_its_ranking(tiny_dir):
    from srppo.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    rm = load_reward_model(tiny_dir, torch.device("cpu"), torch.float32)
    prompts = [[5, 6, 7], [8, 9]]
    answers = [[Generation(p, r, False) for r in ([10, 11, tok.eos_token_id], [12, tok.eos_token_id], [13])]
               for p in prompts]
    with pytest.raises(ValueError, match="same reward"):  # the zero head: nothing to scale
        match_spread(rm, answer_scores(rm, tok, prompts, answers, 2, torch.device("cpu")), 6.8)
    torch.manual_seed(0)
    torch.nn.init.normal_(rm.score.weight, std=1e-3)  # a barely trained head: a tiny spread
    before = answer_scores(rm, tok, prompts, answers, 2, torch.device("cpu"))
    factor = match_spread(rm, before, 6.8)
    after = answer_scores(rm, tok, prompts, answers, 4, torch.device("cpu"))
    assert after.std().item() == pytest.approx(6.8, rel=1e-4) and factor == pytest.approx(6.8 / before.std().item())
    assert torch.equal(after.argsort(), before.argsort())  # the same ranking: only the scale moved


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
    assert "| **SRPPO** | 45.00 ± 1.00 | 45.00 ± 1.00 |" in table
    assert "| SFT | **+5.00 [+2.52, +7.48], n=3** | **+5.00 [+2.52, +7.48], n=3** |" in table
    assert summarise(_rows())["minimum"]["spin"]["Average"] == {"mean": 40.0, "std": 1.0, "n": 3}


def _eval_cell(root, cell: str, by_method: dict) -> None:
    (root / cell).mkdir()
    (root / cell / "eval.json").write_text(json.dumps(by_method))


def test_paired_differences_per_group_hand_numbers(tmp_path):
    """SRPPO minus SFT per group over 3 seeds, t(0.975, df=2) = 4.303: half-width 4.303 * sd / sqrt(3)."""
    sft = {"in_domain_strict": 50.0, "compositional_strict": 20.0, "control_strict": 30.0, "strict_acc": 40.0}
    srppo = {"in_domain_strict": [54.0, 56.0, 55.0], "compositional_strict": [17.0, 16.0, 15.0],
             "control_strict": [31.0, 29.0, 30.0], "arithmetic_em": [12.0, 14.0, 20.0], "strict_acc": 40.0}
    for seed in range(3):
        base = {**sft, **({"arithmetic_em": 10.0} if seed < 2 else {})}  # seed 2: no arithmetic score
        mine = {k: v[seed] if isinstance(v, list) else v for k, v in srppo.items()}
        _eval_cell(tmp_path, f"minimum-s{seed}", {"sft": base, "srppo": mine})
    # an older eval: no compositional or control keys, one seed
    _eval_cell(tmp_path, "medium-s0", {"sft": {"strict_acc": 30.0, "out_domain_strict": 20.0},
                                       "srppo": {"strict_acc": 35.0, "out_domain_strict": 21.0}})
    rows = collect(tmp_path)
    diffs = paired_differences(rows, "minimum")["sft"]
    half = round(4.303 / math.sqrt(3), 2)  # sd of the differences is 1.0 in the three groups below
    assert diffs["IF in-domain"] == {"mean": 5.0, "std": 1.0, "n": 3, "ci95": [round(5 - half, 2), round(5 + half, 2)],
                                     "verdict": "better"}
    assert diffs["IF compositional"]["ci95"] == [round(-4 - half, 2), round(-4 + half, 2)]
    assert diffs["IF compositional"]["verdict"] == "worse"
    assert diffs["IF control"]["mean"] == 0.0 and diffs["IF control"]["verdict"] == "within seed noise"
    # arithmetic: only seeds 0 and 1 have both, differences 2 and 4: sd sqrt(2), t(0.975, df=1) = 12.706
    assert diffs["Arithmetic EM"]["n"] == 2 and diffs["Arithmetic EM"]["ci95"] == [round(3 - 12.706, 2),
                                                                                   round(3 + 12.706, 2)]
    assert diffs["IF strict"] == {"mean": 0.0, "std": 0.0, "n": 3, "ci95": [0.0, 0.0], "verdict": "within seed noise"}
    assert "IF out-of-domain" not in diffs  # no cell of this setup has the key: skipped, not zero
    # one seed: no interval, and no verdict pretending to one
    old = paired_differences(rows, "medium")["sft"]
    assert set(old) == {"IF strict", "IF out-of-domain", "Average"}
    assert old["IF strict"] == {"mean": 5.0, "std": None, "n": 1, "ci95": None, "verdict": "n=1: no interval"}

    table = markdown(rows)
    header = "| Baseline | IF strict | IF in-domain | IF compositional | IF control | Arithmetic EM | Average |"
    assert header in table
    assert (f"| SFT | +0.00 [+0.00, +0.00], n=3 | **+5.00 [+{5 - half:.2f}, +{5 + half:.2f}], n=3** | "
            f"**-4.00 [{-4 - half:.2f}, {-4 + half:.2f}], n=3** | +0.00 [{-half:.2f}, +{half:.2f}], n=3 | "
            f"+3.00 [-9.71, +15.71], n=2 |") in table
    assert "| Baseline | IF strict | IF out-of-domain | Average |" in table and "| SFT | +5.00, n=1 | +1.00, n=1 |" in table
    assert summary_json(rows)["srppo_vs"]["minimum"]["sft"]["IF in-domain"] == diffs["IF in-domain"]


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
    assert collect(tmp_path, cells=["medium-s0", "medium-s1"]) == []
    assert len(collect(tmp_path, cells=["medium-s4"])) == 1
    # the grid's per-method files add up; a PPO method's snapshots stay out of the table
    (cell / "eval_sft.json").write_text('{"sft": {"strict_acc": 8.0}}')
    (cell / "eval_srppo.json").write_text('{"srppo@25": {"strict_acc": 9.0}}')
    assert [(r["method"], r["IF strict"]) for r in collect(tmp_path)] == [("srppo", 10.0), ("sft", 8.0)]


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
