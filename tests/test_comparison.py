"""The comparison grid (comparison/, a DVC project of its own) end to end on a tiny model: every method, one seed.

Real DVC, real stage processes, one cell (one setup, one seed): its p_SFT, then SFT (extended), SPIN, a
Bradley-Terry reward model, PPO with it, SRPPO, the data filter and the evaluation; the `table` stage writes
the paper-style table, the bar plot and summary.json, which `dvc metrics diff` compares across commits. With
one seed there is one p_SFT, as when p_SFT was trained once per setup, so per-cell p_SFT costs this test
nothing. The statistics over seeds are tested on fixed numbers in test_baselines.py.
"""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from test_pipeline import make_repo, run

pytestmark = pytest.mark.slow
METHODS = ["SFT", "SFT (extended)", "SPIN", "PPO w/ RM", "**SRPPO**"]


@pytest.fixture(scope="module")
def grid_repo(tmp_path_factory, tiny_dir):
    repo = make_repo(tmp_path_factory.mktemp("grid"), tiny_dir)
    # the pipeline definition only: not the committed results of the embedded run
    for kept in ("metrics", "reports", "dvclive", "results"):
        shutil.rmtree(repo / "comparison" / kept, ignore_errors=True)
    cell = {"minimum-s1": {"overlap": "minimum", "seed": 1}}
    grid = {"overlaps": ["minimum"], "cells": cell, "baseline_cells": cell, "token_cells": cell, "filter_seed": 1,
            "sft_extended_epochs": 0.5, "precision": "auto"}
    (repo / "comparison" / "grid.yaml").write_text(yaml.safe_dump(grid))
    # the grid's params: the repository's smoke params, with the actor also saved halfway through PPO
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ppo"]["snapshots"] = [0.5]
    (repo / "comparison" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "tools/dvc_pipelines.py"], repo)
    run(["git", "commit", "-qam", "a one-cell grid on the smoke params"], repo)
    return repo


def repro_grid(grid_repo) -> str:
    return run(["dvc", "repro"], grid_repo / "comparison")


def test_one_command_gives_the_table_plot_and_metrics_for_every_method(grid_repo):
    run(["dvc", "repro", "base"], grid_repo)  # p_PT comes from the main pipeline
    out = repro_grid(grid_repo)
    ran = set(re.findall(r"Running stage '([\w@-]+)'", out))
    for stage in ("sft", "sft_extended", "spin", "reward_model", "diagnose", "rm_ppo", "srppo", "rloo", "srppo_token",
                  "eval_sft", "eval_srppo", "eval_rloo"):
        assert f"{stage}@minimum-s1" in ran, (stage, sorted(ran))
    assert "sft@minimum" not in ran  # p_SFT per cell, with its seed: none per setup
    assert "SRPPO_SET" in out and "reward.source=model" in out

    results = grid_repo / "comparison" / "results"
    table = (results / "table.md").read_text()
    assert "### minimum overlap (1 seed: [1])" in table
    rows = {line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| ")}
    assert set(METHODS) <= rows
    differences = [line for line in table.split("paired by seed")[1].split("###")[0].splitlines()
                   if line.startswith("| ") and not line.startswith("| Baseline")]
    assert {line.split(" | ")[0] for line in differences} == {"| SFT", "| SFT (extended)", "| SPIN", "| PPO w/ RM",
                                                              "| SRPPO (RLOO)"}
    assert all(", n=1 |" in line and "[" not in line for line in differences)  # one seed: no interval
    # the data filter ran on the first seed's cell: its p_SFT, its seed
    assert "### Coherent reward as a data filter: minimum overlap (seed 1)" in table
    assert "| SFT on the top by coherent reward |" in table and "| SFT on a random subset of the same size |" in table
    kept = json.loads((grid_repo / "comparison/metrics/minimum/filter.json").read_text())
    assert kept["kept"] == kept["demos"] // 2 and kept["reward_mean_kept"] >= kept["reward_mean_all"]
    assert (results / "bars.png").stat().st_size > 5000

    summary = json.loads((results / "summary.json").read_text())
    scores = summary["scores"]["minimum"]
    assert set(scores) == {"sft", "sft_extended", "spin", "rm_ppo", "rloo", "srppo"}
    assert all(scores[m]["Average"]["n"] == 1 for m in scores)
    vs = summary["srppo_vs"]["minimum"]
    assert set(vs) == {"sft", "sft_extended", "spin", "rm_ppo", "rloo"}
    assert {"IF strict", "IF in-domain", "Average"} <= set(vs["sft"])  # per group
    assert vs["sft"]["Average"]["ci95"] is None and vs["sft"]["Average"]["verdict"] == "n=1: no interval"

    # the reward model was trained and PPO read it: its score is the reward, p_PT never loaded
    rm = json.loads((grid_repo / "comparison/metrics/minimum-s1/reward_model.json").read_text())
    assert rm["train_pairs"] > 0
    # its head rescaled to the spread of the cell's coherent reward (SRPPO's normaliser), so β prices alike
    coherent_scale = json.loads((grid_repo / "comparison/data/minimum-s1/srppo/reward_norm.json").read_text())["scale"]
    assert rm["rescaled_by"] == pytest.approx(coherent_scale / rm["answer_reward_std"])
    assert (grid_repo / "comparison/data/minimum-s1/reward_model/model.safetensors").exists()
    assert "reward model" in json.dumps(json.loads((grid_repo / "comparison/metrics/minimum-s1/rm_ppo.json").read_text()))
    # the cell's seed reached the stage: its run differs from the root pipeline's seed 0 calibration
    assert "runtime.seed=1" in out

    # the fidelity results: the halfway snapshots evaluated with the final actors, placed against KL
    fidelity = (results / "fidelity.md").read_text()
    assert "one seed so far: no interval, no verdict" in fidelity
    srppo_eval = json.loads((grid_repo / "comparison/metrics/minimum-s1/eval_srppo.json").read_text())
    assert set(srppo_eval) == {"srppo", "srppo@50"}
    assert set(summary["fidelity"]["accuracy_kl"]["minimum-s1"]) == {"srppo", "rloo", "rm_ppo"}
    assert summary["fidelity"]["appendix_e"][0]["cell"] == "minimum-s1"
    for png in ("accuracy_kl.png", "appendix_e.png"):
        assert (results / png).stat().st_size > 5000

def test_a_one_line_edit_to_any_module_reruns_exactly_the_grid_stages_that_import_it(grid_repo):
    # before the next test, which leaves the `table` stage's inputs changed on purpose
    from test_dvc_pipelines import assert_edits_rerun_exactly_their_stages

    assert assert_edits_rerun_exactly_their_stages(grid_repo / "comparison", grid_repo) > 40


def test_noop_then_metrics_diff_between_two_runs(grid_repo):
    assert "Running stage" not in repro_grid(grid_repo)
    run(["git", "add", "-A"], grid_repo)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "grid"], grid_repo)
    # a second run: the table without the data-filter evaluation (the cells stay cached)
    summary = grid_repo / "comparison/results/summary.json"
    (grid_repo / "comparison/metrics/minimum/filter_eval.json").unlink()
    run(["python", "stages/compare.py", "comparison/metrics", "comparison/reports", "comparison/dvclive",
         "comparison/results", "comparison/grid.yaml"], grid_repo)
    diff = json.loads(subprocess.run(["dvc", "metrics", "diff", "--json"], cwd=grid_repo / "comparison",
                                     capture_output=True, text=True, check=True).stdout)
    changed = diff["results/summary.json"]
    old = json.loads(subprocess.run(["git", "show", f"HEAD:{summary.relative_to(grid_repo)}"], cwd=grid_repo,
                                    capture_output=True, text=True, check=True).stdout)
    before = old["data_filter"]["minimum"]["sft_filtered"]["Average"]
    assert changed["data_filter.minimum.sft_filtered.Average"] == {"old": before, "new": None}
