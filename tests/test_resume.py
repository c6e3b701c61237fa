"""Killed stages resume from their last checkpoint and end exactly where an uninterrupted run ends.

Each test runs the real stage through `dvc repro` in a temporary git+DVC repository on tiny models:
an uninterrupted run, then a forced rerun SIGKILLed (the whole process group, as an OOM killer or a
preempted node would) right after its first checkpoint, then a plain rerun. On CPU with the same seed
the resumed run is bitwise identical: same weights file, same loss/reward curves (timings aside).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, live_rows

from srppo.config.files import deep_merge, dump_params, validate
from srppo.data.records import write_jsonl
from srppo.io import write_json
from srppo.scoring.rewards import RewardNormalizer

pytestmark = pytest.mark.slow  # real stages through DVC: about a minute

SMALL = {
    "runtime": {"threads": 1, "device": "cpu"},
    "prepare": {"n_demos": 16, "n_ppo_prompts": 8, "n_calibration": 2, "n_eval_per_family": 1},
    "sft": {"epochs": 10, "batch_size": 2, "checkpoint_every": 20, "checkpoint_min_seconds": 0},
    "rollouts": {"max_new_tokens": 8, "batch_size": 4, "buffer_size": 4, "n_buffers": 1},
    "ppo": {"iterations": 8, "critic_warmup_buffers": 1, "mini_batch_size": 2, "checkpoint_every": 3,
            "checkpoint_min_seconds": 0},
}


def run(cmd, cwd) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def make_repo(root: Path, tiny_dir: Path, overrides: dict | None = None) -> Path:
    from srppo.data.prepare import prepare

    for item in ("srppo", "stages", "configs"):
        shutil.copytree(ROOT / item, root / item, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    params = validate(deep_merge(deep_merge(SMALL, overrides or {}),
                                 {"base": {"name_or_path": str(tiny_dir), "gguf_package": None, "gguf_file": None}}))
    (root / "params.yaml").write_text(dump_params(params))
    shutil.copytree(tiny_dir, root / "data" / "base")
    for name, recs in prepare(params.prepare).items():
        write_jsonl(root / "data" / "prepared" / f"{name}.jsonl", recs)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.autostage", "false"]):
        run(cmd, root)
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def curve(live_dir: Path) -> list[dict]:
    """The curves DVCLive wrote, without the wall-clock ones, which no two runs share."""
    return [{k: v for k, v in row.items() if not k.startswith("time_") and k != "tokens_per_s"}
            for row in live_rows(live_dir)]


def kill_after_first_checkpoint(repo: Path, stage: str) -> str:
    """Force-rerun `stage` under DVC and SIGKILL its process group once a checkpoint is on disk."""
    meta = repo / "data" / "checkpoints" / stage / "latest" / "meta.json"
    proc = subprocess.Popen(["dvc", "repro", "-s", "-f", stage], cwd=repo, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not meta.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"{stage} ended before it could be killed:\n{proc.stdout.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return json.loads(meta.read_text())["step"]


def assert_crash_left_nothing(repo: Path, stage: str, outs: list[str]) -> None:
    for out in outs:
        assert not (repo / out).exists(), f"{out} exists after a crash"
    status = run(["dvc", "status", stage], repo)
    assert "up to date" not in status and "deleted" in status, status


def resume(repo: Path, stage: str, killed_at: int, every: int) -> None:
    # --no-run-cache: these exact inputs finished once in this repo, and DVC would restore that result
    log = run(["dvc", "repro", "-s", "--no-run-cache", stage], repo)
    assert f"resuming from checkpoint data/checkpoints/{stage}/latest at step {killed_at}" in log, log
    assert killed_at >= every  # the first checkpoint survived: at most one interval is redone
    assert not (repo / "data" / "checkpoints" / stage).exists()
    assert "up to date" in run(["dvc", "status", stage], repo)


@pytest.fixture()
def repo(tmp_path, tiny_dir):
    return make_repo(tmp_path, tiny_dir)


def result(repo: Path, stage: str, curves: str, keys: tuple[str, ...]) -> tuple:
    """What must survive a kill: the weights file, the curves, the metrics and the report (timings aside)."""
    metrics = json.loads((repo / f"metrics/{stage}.json").read_text())
    report = json.loads((repo / f"reports/{stage}.json").read_text())
    snapshots = {p.parent.name: sha(p) for p in (repo / f"data/{stage}").glob("snapshots/*/model.safetensors")}
    return (sha(repo / f"data/{stage}/model.safetensors"), curve(repo / curves), metrics,
            {k: report[k] for k in keys}, snapshots)


def kill_and_resume_to_the_same_result(repo: Path, stage: str, curves: str, keys: tuple[str, ...]) -> None:
    """An uninterrupted run, a forced rerun killed after its first checkpoint, a resume: same result."""
    run(["dvc", "repro", "-s", stage], repo)
    want = result(repo, stage, curves, keys)
    kept = {p: (repo / p).read_bytes() for p in (f"metrics/{stage}.json", f"reports/{stage}.json")}
    killed_at = kill_after_first_checkpoint(repo, stage)
    assert_crash_left_nothing(repo, stage, [f"data/{stage}"])
    # the uncached results stay the last finished run's (dvc.yaml: persist), byte for byte
    assert {p: (repo / p).read_bytes() for p in kept} == kept
    resume(repo, stage, killed_at, SMALL[stage]["checkpoint_every"])
    assert result(repo, stage, curves, keys) == want


SFT_METRICS = ("final_loss", "first_loss", "steps", "tokens")


def test_sft_killed_resumes_to_identical_result(repo):
    kill_and_resume_to_the_same_result(repo, "sft", "dvclive/sft", SFT_METRICS)


def write_ppo_inputs(repo: Path, sft_dir: Path) -> None:
    """p_SFT, a neutral reward normaliser and one rollout buffer: what the upstream stages would write."""
    shutil.copytree(sft_dir, repo / "data" / "sft")
    write_json(repo / "data/calibrate/reward_norm.json", RewardNormalizer().to_dict())
    run(["python", "stages/rollouts.py", "data/base", "data/sft", "data/prepared/ppo_prompts.jsonl",
         "data/rollouts", "metrics/rollouts.json", "reports/rollouts.json"], repo)


PPO_METRICS = ("iterations", "stopped_early", "reward_raw_first", "reward_raw_last", "kl_last",
               "response_length_last", "eos_rate_last")


def test_ppo_killed_resumes_to_identical_result(tmp_path, tiny_dir, tiny_sft_dir):
    """With ppo.snapshots [0.25, 0.5] of 8 iterations: the actor after iterations 2 and 4 as well, the same
    whether the run was killed between them or not, each with the KL of its own next samples."""
    repo = make_repo(tmp_path, tiny_dir, {"ppo": {"snapshots": [0.25, 0.5]}})
    write_ppo_inputs(repo, tiny_sft_dir)
    kill_and_resume_to_the_same_result(repo, "ppo", "dvclive/ppo", (*PPO_METRICS, "snapshots"))
    snapshots = json.loads((repo / "reports/ppo.json").read_text())["snapshots"]
    assert {k: v["iteration"] for k, v in snapshots.items()} == {"25": 2, "50": 4, "100": 8}
    ppo_rows = [r for r in live_rows(repo / "dvclive/ppo") if "policy_loss" in r]
    assert snapshots["25"]["kl"] == pytest.approx(ppo_rows[2]["kl"])  # iteration 3 samples from snapshot 25
    for name in ("25", "50"):
        assert (repo / f"data/ppo/snapshots/{name}/config.json").exists()
    assert not (repo / "data/snapshots/ppo").exists()  # the staging area goes once the stage has finished


def test_checkpoint_of_other_params_is_ignored(repo):
    kill_after_first_checkpoint(repo, "sft")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sft"]["lr"] = 1e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = run(["python", "stages/sft.py", "data/base", "data/prepared/demos.jsonl", "data/sft",
               "metrics/sft.json", "reports/sft.json", "dvclive/sft"], repo)
    assert "ignoring checkpoint data/checkpoints/sft/latest: it was made with other params or inputs" in log
    assert "resuming" not in log
