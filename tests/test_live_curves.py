"""The training stages' DVCLive logger (stages/live_curves.py): rows land on disk as each step ends,
warm-up rows stay apart, and DVCLive declares nothing of its own (no dvc.yaml, no experiment)."""

import subprocess
import sys

import pytest
from conftest import ROOT, live_rows

sys.path.insert(0, str(ROOT / "stages"))
from live_curves import live_curves  # noqa: E402


def repo(path, commit: bool):
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"]):
        subprocess.run(cmd, cwd=path, check=True, capture_output=True)
    if commit:  # without a commit DVCLive's own git lookup fails (treeverse/dvclive#522); `dvc repro` does not
        subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True, capture_output=True)
    return path


@pytest.mark.parametrize("commit", [True, False], ids=["committed", "no-commit-yet"])
def test_each_step_is_on_disk_when_it_ends(tmp_path, monkeypatch, commit):
    monkeypatch.chdir(repo(tmp_path, commit))
    with live_curves("dvclive/ppo") as log:
        log(1, {"step": 1, "phase": "warmup", "value_loss": 0.5, "reward_raw": 3.0}, "warmup/")
        assert live_rows(tmp_path / "dvclive/ppo") == [{"step": 1, "value_loss": 0.5, "reward_raw": 3.0}]
        log(2, {"step": 2, "phase": "ppo", "reward_raw": 4.0, "kl": 0.25, "stopped": False, "note": "x"})
        assert (tmp_path / "dvclive/ppo/plots/metrics/kl.tsv").read_text() == "step\tkl\n2\t0.25\n"
    assert live_rows(tmp_path / "dvclive/ppo") == [{"step": 1, "value_loss": 0.5, "reward_raw": 3.0},
                                                   {"step": 2, "reward_raw": 4.0, "kl": 0.25}]
    assert (tmp_path / "dvclive/ppo/plots/metrics/warmup/reward_raw.tsv").exists()  # apart from PPO's
    assert not (tmp_path / "dvc.yaml").exists() and not list(tmp_path.glob("dvclive/**/dvc.yaml"))
    refs = subprocess.run(["git", "for-each-ref", "refs/exps"], cwd=tmp_path, capture_output=True, text=True)
    assert refs.stdout == ""  # no experiment recorded


def test_other_ranks_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with live_curves("dvclive/sft", enabled=False) as log:
        log(1, {"loss": 1.0})
    assert not (tmp_path / "dvclive").exists()
