"""The whole pipeline through `dvc repro` on the smoke preset, in a temporary git repository.

The base model is a tiny local Llama (the smoke preset's `base` pointed at a local path, the same
code path as a hub id), so this runs in about a minute on two cores.
"""

import json
import re
import subprocess

import pytest
import yaml

from conftest import ROOT
from srppo.config import apply_preset, deep_merge, dump_params

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
    run(["git", "commit", "-qam", "smoke preset"], repo)
    return repo


def apply_preset_dict(raw: dict):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(raw, f)
    return apply_preset(f.name)


def test_full_repro_then_noop_then_only_ppo_and_eval(reproduced_smoke, tmp_path):
    from test_flows_support import copy_repo

    repo, first = copy_repo(reproduced_smoke[0], tmp_path / "repo"), reproduced_smoke[1]  # the first `dvc repro`
    assert stages_run(first) == {"base", "prepare", "sft", "calibrate", "rollouts", "ppo", "eval"}
    assert (repo / "data" / "ppo" / "model.safetensors").exists()
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(metrics) >= {"pretrained", "sft", "srppo"}
    assert (repo / "data" / "eval" / "table.md").read_text().startswith("| Model |")
    ppo = json.loads((repo / "metrics" / "ppo.json").read_text())
    assert ppo["iterations"] == 2
    assert "normalizer" in json.loads((repo / "metrics" / "calibrate.json").read_text())
    for plot in ("sft_loss.png", "ppo_curves.png", "calibrate_rewards.png"):
        assert (repo / "plots" / plot).stat().st_size > 1000

    second = run(["dvc", "repro"], repo)
    assert stages_run(second) == set()
    assert "up to date" in run(["dvc", "status"], repo)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ppo"]["kl_coef"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(["dvc", "repro"], repo)
    assert stages_run(third) == {"ppo", "eval"}
