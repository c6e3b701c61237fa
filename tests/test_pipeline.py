"""The whole pipeline through `dvc repro` on the smoke preset, in a temporary git repository.

The base model is a tiny local Llama (the smoke preset's `base` pointed at a local path, the same
code path as a hub id), so this runs in about a minute on two cores.
"""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, live_rows

from srppo.config.files import apply_preset, deep_merge, dump_params

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def make_repo(repo, base_dir, override: dict | None = None):
    """A full clone of the project (test_flows_support.full_clone) with the smoke preset on `base_dir` as
    p_PT, and `override` laid over it, committed."""
    from test_flows_support import full_clone

    full_clone(repo)
    base = {"base": {"name_or_path": str(base_dir), "gguf_package": None, "gguf_file": None}}
    preset = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    params = apply_preset_dict(deep_merge(deep_merge(preset, base), override or {}))
    (repo / "params.yaml").write_text(dump_params(params))
    run([sys.executable, "tools/dvc_pipelines.py"], repo)  # the local model directory becomes base's input
    run(["git", "commit", "-qam", "smoke preset"], repo)
    return repo


def apply_preset_dict(raw: dict):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(raw, f)
    return apply_preset(f.name)


def assert_metrics_are_few_and_reports_hold_the_rest(repo) -> None:
    """`dvc exp show` gets the few numbers compared across runs; timings, paths and breakdowns are reports."""
    exp = json.loads(run(["dvc", "exp", "show", "--json"], repo))[0]["data"]["metrics"]
    columns = [(f, k) for f, m in exp.items() for k in flatten(m["data"])]
    # 3 models x 8 eval headlines (in-domain, compositional, control, out-of-domain ... since the report groups)
    assert len(columns) <= 53, columns  # + diagnose's 3
    assert not [c for c in columns if c[1].startswith("seconds") or c[1] == "source"], columns
    for stage in ("base", "prepare", "sft", "diagnose", "calibrate", "rollouts", "ppo", "eval"):
        assert json.loads((repo / "reports" / f"{stage}.json").read_text())["seconds"]["total"] > 0


def flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        yield from flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]


def assert_curves_through_dvclive(repo, sft_steps: int) -> None:
    """One DVCLive row per SFT step and per PPO warm-up buffer / iteration, and one plot per curve family."""
    assert [r["step"] for r in live_rows(repo / "dvclive" / "sft")] == list(range(1, sft_steps + 1))
    ppo = live_rows(repo / "dvclive" / "ppo")
    assert [r["step"] for r in ppo] == [1, 2, 3, 4]  # 1 warm-up buffer swept twice, 2 iterations
    assert (repo / "dvclive/ppo/plots/metrics/warmup/value_loss.tsv").exists()  # warm-up rows stay apart
    assert not (repo / "dvclive/ppo/plots/metrics/warmup/policy_loss.tsv").exists()
    assert not list(repo.glob("dvclive/**/dvc.yaml"))  # DVCLive never declares anything itself
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo))["data"]
    declared = [next(iter(p)) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]]
    assert list(shown) == declared and all(len(v) == 1 for v in shown.values())  # each family once
    value_loss = shown["ppo_value_loss"][0]["content"]["data"]["values"]
    assert {v["filename"] for v in value_loss} == {"warmup/value_loss.tsv", "value_loss.tsv"}


def test_full_repro_then_noop_then_only_ppo_and_eval(reproduced_smoke, tmp_path):
    from test_flows_support import copy_repo

    repo, first = copy_repo(reproduced_smoke[0], tmp_path / "repo"), reproduced_smoke[1]  # the first `dvc repro`
    assert stages_run(first) == {"base", "prepare", "sft", "diagnose", "calibrate", "rollouts", "ppo", "eval"}
    assert (repo / "data" / "ppo" / "model.safetensors").exists()
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(metrics) == {"sft", "srppo"}  # the timings are in reports/eval.json
    assert (repo / "data" / "eval" / "table.md").read_text().startswith("| Model |")
    ppo = json.loads((repo / "metrics" / "ppo.json").read_text())
    assert ppo["iterations"] == 2
    assert "normalizer" in json.loads((repo / "reports" / "calibrate.json").read_text())
    for png in ("dvclive/sft/curves.png", "dvclive/ppo/curves.png", "plots/calibrate_rewards.png"):
        assert (repo / png).stat().st_size > 1000
    assert_metrics_are_few_and_reports_hold_the_rest(repo)
    assert_curves_through_dvclive(repo, json.loads((repo / "metrics" / "sft.json").read_text())["steps"])

    second = run(["dvc", "repro"], repo)
    assert stages_run(second) == set()
    assert "up to date" in run(["dvc", "status"], repo)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ppo"]["kl_coef"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(["dvc", "repro"], repo)
    assert stages_run(third) == {"ppo", "eval"}


def test_a_one_line_edit_to_any_module_reruns_exactly_the_stages_that_import_it(reproduced_smoke, tmp_path):
    from test_dvc_pipelines import assert_edits_rerun_exactly_their_stages
    from test_flows_support import copy_repo

    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    assert assert_edits_rerun_exactly_their_stages(repo, repo) > 40
