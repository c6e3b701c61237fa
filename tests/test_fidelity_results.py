"""The fidelity grid's results from hand-made cell files: the primary comparison, accuracy against KL over
p_SFT's best-of-k frontier, each run's reward rise against the sizing bar, Appendix E, and the `table` stage
that writes them (a real process on files laid out as the grid's stages leave them)."""

import json
import math
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from srppo.config.files import ConfigError, validate
from srppo.config.ppo import snapshot_iterations
from srppo.evaluation import fidelity
from srppo.evaluation.compare import collect

SFT = [30.0, 32.0, 34.0]      # compositional strict of p_SFT, seeds 0-2
SRPPO = [36.0, 37.0, 41.0]    # the final SRPPO actor: differences 6, 5, 7


def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def _tsv(path, key: str, values: list[float]) -> None:
    _write(path, "step\t" + key + "\n" + "".join(f"{i + 10}\t{v}\n" for i, v in enumerate(values)))


@pytest.fixture()
def grid(tmp_path):
    metrics, reports, live = tmp_path / "metrics", tmp_path / "reports", tmp_path / "dvclive"
    for seed in range(3):
        cell = f"minimum-s{seed}"
        _write(metrics / cell / "eval_sft.json", {"sft": {"strict_acc": 40.0, "compositional_strict": SFT[seed]}})
        _write(metrics / cell / "eval_srppo.json", {
            "srppo": {"strict_acc": 41.0, "compositional_strict": SRPPO[seed]},
            "srppo@25": {"strict_acc": 40.0, "compositional_strict": SFT[seed] + 1},
            "srppo@50": {"strict_acc": 40.5, "compositional_strict": SFT[seed] + 3}})
        stopped = seed == 0  # the length guard stopped this run at iteration 20: no 50 % snapshot
        _write(reports / cell / "srppo.json", {"snapshots": {
            "25": {"iteration": 16, "rollouts": 512, "kl": 0.5},
            "50": {"iteration": 32, "reached": False} if stopped else {"iteration": 32, "rollouts": 1024, "kl": 1.5},
            "100": {"iteration": 20 if stopped else 63, "rollouts": 2016, "kl": 4.0}}})
        if stopped:
            _write(metrics / cell / "eval_srppo.json", {k: v for k, v in json.loads(
                (metrics / cell / "eval_srppo.json").read_text()).items() if k != "srppo@50"})
        _write(reports / cell / "diagnose.json", {"families": {
            "combo_upper_end": {"domain": "out", "best_of_k": {"1": 30.0, "8": 50.0}, "kl": {"1": 0.0, "8": 1.2044}},
            "paraphrase_case": {"domain": "out", "best_of_k": {"1": 10.0, "8": 30.0}, "kl": {"1": 0.0, "8": 1.2044}},
            "uppercase": {"domain": "in", "best_of_k": {"1": 90.0, "8": 99.0}, "kl": {"1": 0.0, "8": 1.2044}},
            "bullet_list": {"domain": "out", "best_of_k": {"1": 5.0, "8": 5.0}, "kl": {"1": 0.0, "8": 1.2044}}}})
        # reward: flat around 10 for 8 iterations (sd 1), then 14
        _tsv(live / cell / "srppo/plots/metrics/reward_raw.tsv", "reward_raw", [9, 11] * 4 + [12] * 4 + [14] * 8)
    _tsv(live / "minimum-s0/srppo/plots/metrics/response_length.tsv", "response_length", [20, 19, 18])
    _tsv(live / "minimum-s0/srppo/plots/metrics/eos_rate.tsv", "eos_rate", [0.9, 0.95, 0.97])
    _tsv(live / "minimum-s0/srppo_token/plots/metrics/response_length.tsv", "response_length", [20, 30, 45])
    _tsv(live / "minimum-s0/srppo_token/plots/metrics/eos_rate.tsv", "eos_rate", [0.9, 0.5, 0.1])
    _write(reports / "minimum-s0/srppo_token.json", {"stopped_early": "length guard at iteration 3: ..."})
    return tmp_path


def test_primary_comparison_is_srppo_minus_sft_compositional_paired_by_seed(grid):
    rows = collect(grid / "metrics")
    primary = fidelity.primary_comparison(rows)
    d = primary["difference"]
    half = 4.303 * 1.0 / math.sqrt(3)  # differences 6, 5, 7: mean 6, sd 1
    assert d["mean"] == 6.0 and d["n"] == 3 and d["ci95"] == [round(6 - half, 2), round(6 + half, 2)]
    assert primary["verdict"] == "SRPPO beats SFT"
    one = fidelity.primary_comparison([r for r in rows if r["seed"] == 0])
    assert one["verdict"] == "one seed so far: no interval, no verdict"
    assert fidelity.primary_comparison([])["verdict"] == "no cell has both yet"


def test_accuracy_against_kl_along_the_run_and_the_frontier(grid):
    points = fidelity.kl_points(grid / "metrics", grid / "reports", "minimum-s1")
    assert points == {"srppo": [(0.0, 32.0, "p_SFT"), (0.5, 33.0, "25 %"), (1.5, 35.0, "50 %"),
                                (4.0, 37.0, "final (it. 63)")]}
    # only the compositional families out of the setup's domain: the in-domain and control ones stay out
    assert fidelity.best_of_k_frontier(grid / "reports", "minimum-s1") == [(0.0, 20.0, 1), (1.2044, 40.0, 8)]
    assert fidelity.plot_accuracy_kl(grid / "metrics", grid / "reports", ["minimum-s0", "minimum-s1"],
                                     grid / "out" / "accuracy_kl.png")
    assert (grid / "out" / "accuracy_kl.png").stat().st_size > 10_000


def test_reward_rise_in_buffer_standard_errors(grid):
    rise = fidelity.reward_rise(grid / "dvclive", "minimum-s0", "srppo")
    sd = math.sqrt(8 / 7)  # 9, 11, 9, 11, ...: sample sd of the first 8 buffer means
    assert rise["first"] == 10.0 and rise["last"] == 14.0 and rise["rise"] == 4.0
    assert rise["rise_in_se"] == round(4 / sd, 2) and rise["rise_in_se"] >= 3
    assert fidelity.reward_rise(grid / "dvclive", "minimum-s0", "rloo") is None  # not run


def test_appendix_e_lengths_and_where_the_guard_stopped(grid):
    run = fidelity.appendix_e(grid / "dvclive", grid / "reports", "minimum-s0")
    assert run["token"]["response_length"] == [20, 30, 45] and run["iterations"] == 3
    assert run["stopped_early"].startswith("length guard")
    assert fidelity.appendix_e(grid / "dvclive", grid / "reports", "minimum-s1") is None


def test_the_table_stage_writes_the_verdict_tables_and_plots(grid):
    cells = {f"minimum-s{s}": {"overlap": "minimum", "seed": s} for s in range(3)}
    (grid / "grid.yaml").write_text(yaml.safe_dump({"overlaps": ["minimum"], "cells": cells, "filter_seed": 0,
                                                   "token_cells": {"minimum-s0": cells["minimum-s0"]}}))
    out = grid / "results"
    subprocess.run([sys.executable, "stages/compare.py", str(grid / "metrics"), str(grid / "reports"),
                    str(grid / "dvclive"), str(out), str(grid / "grid.yaml")], cwd=ROOT, check=True,
                   capture_output=True)
    text = (out / "fidelity.md").read_text()
    assert "**+6.00 points [+3.52, +8.48], n = 3 seeds: SRPPO beats SFT.**" in text
    assert "| minimum-s0 | srppo | 20 | 10.00 | 14.00 | +4.00 | 1.07 | 3.74 |" in text
    assert "| minimum-s2 | SRPPO | 34.00 | 35.00 (KL 0.50) | 37.00 (KL 1.50) | 41.00 (KL 4.00), it. 63 |" in text
    assert "| minimum-s0 | SRPPO | 30.00 | 31.00 (KL 0.50) | not reached | 36.00 (KL 4.00), it. 20 |" in text
    assert "Stopped: length guard at iteration 3" in text
    assert "| SRPPO (RLOO) |" not in (out / "table.md").read_text()  # not run: no row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fidelity"]["primary"]["difference"]["verdict"] == "better"
    for png in ("bars.png", "accuracy_kl.png", "appendix_e.png"):
        assert (out / png).stat().st_size > 5_000, png


def test_snapshots_are_fractions_inside_the_run():
    assert snapshot_iterations([0.5, 0.25], 63) == {"25": 16, "50": 32}
    assert snapshot_iterations([0.01], 10) == {"1": 1}  # at least the first iteration
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        validate({"ppo": {"snapshots": [0.5, 1.0]}})
    with pytest.raises(ConfigError, match="fall on the same one"):
        validate({"ppo": {"snapshots": [0.25, 0.26], "iterations": 4}})
    with pytest.raises(ConfigError, match="unknown model name"):
        validate({"eval": {"models": ["sft", "srppo@x"]}})
    assert validate({"eval": {"models": ["srppo@25", "rloo@50", "sft"]}}).eval.models[0] == "srppo@25"


def _stage(name: str) -> dict:
    import runpy

    sys.path.insert(0, str(ROOT / "stages"))  # live_curves, beside the stage scripts
    return runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name=f"stage_{name}")


def test_a_snapshot_the_length_guard_stopped_before_is_reported_and_not_evaluated(tmp_path):
    """The PPO stage leaves an unreached snapshot's folder with only snapshot.json; the eval stage skips it."""
    report = _stage("ppo")["snapshot_report"]
    staging = tmp_path / "staging"
    _write(staging / "25" / "snapshot.json", {"fingerprint": "fp", "iteration": 2})
    _write(staging / "75" / "snapshot.json", {"fingerprint": "another run", "iteration": 6})
    rows = [{"kl": 0.1 * i, "reward_raw": float(i)} for i in range(4)]  # stopped after iteration 4 of 8
    got = report(staging, "fp", {"25": 2, "50": 4, "75": 6}, rows, {"kl": 0.9}, 16)
    assert got["25"] == {"iteration": 2, "rollouts": 32, "kl": 0.2, "reward_raw": 2.0, "reached": True}
    assert got["50"] == {"iteration": 4, "reached": False}  # never staged
    assert got["75"] == {"iteration": 6, "reached": False}  # staged by a run with other params or inputs
    assert got["100"] == {"iteration": 4, "rollouts": 64, "kl": 0.9, "reward_raw": None, "reached": True}

    unreached = _stage("eval")["unreached_snapshots"]
    _write(tmp_path / "model" / "config.json", {})
    _write(tmp_path / "model" / "snapshots" / "25" / "config.json", {})
    _write(tmp_path / "model" / "snapshots" / "50" / "snapshot.json", {"reached": False, "stopped_early": "guard"})
    paths = {"srppo": str(tmp_path / "model"), "srppo@25": str(tmp_path / "model/snapshots/25"),
             "srppo@50": str(tmp_path / "model/snapshots/50")}
    assert unreached(paths) == {"srppo@50": {"reached": False, "stopped_early": "guard"}}


def test_overlap_gain_is_the_medium_minus_minimum_gain_paired_by_seed(grid):
    rows = collect(grid / "metrics")
    assert fidelity.overlap_gain(rows) is None  # no medium cell yet
    for seed, (sft, srppo) in enumerate([(30.0, 40.0), (31.0, 40.0)]):  # gains 10 and 9
        _write(grid / "metrics" / f"medium-s{seed}" / "eval_x.json", {"sft": {"compositional_strict": sft},
                                                                      "srppo": {"compositional_strict": srppo}})
    g = fidelity.overlap_gain(collect(grid / "metrics"))
    # minimum gains: 6 (seed 0), 5 (seed 1): differences 4 and 4
    assert g["mean"] == 4.0 and g["n"] == 2 and g["ci95"] == [4.0, 4.0]


def test_each_point_of_the_run_minus_sft_paired_by_seed(grid):
    diffs = fidelity.snapshot_differences(grid / "metrics", fidelity.cells(grid / "metrics", None))
    assert list(diffs) == ["srppo@25", "srppo@50", "srppo"]  # along the run, the final actor last
    assert diffs["srppo@25"]["compositional_strict"]["mean"] == 1.0 and diffs["srppo@25"]["compositional_strict"]["n"] == 3
    assert diffs["srppo@50"]["compositional_strict"]["n"] == 2  # seed 0's run stopped before it
    assert diffs["srppo"]["compositional_strict"]["mean"] == 6.0
