"""DeepSpeed ZeRO-2 and ZeRO-3 across 2 CPU processes give the single-process loss curves.

The real `sft` and `ppo` stage commands run in a DVC pipeline repo on the tiny model; with
`runtime.num_processes: 2` they relaunch themselves under torchrun (gloo on CPU). Skipped, with the
reason in pytest's summary, where DeepSpeed cannot be imported.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import live_rows
from safetensors.torch import load_file



def _deepspeed_missing() -> str | None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    res = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True, env=env)
    return None if res.returncode == 0 else f"DeepSpeed is not usable here: {res.stderr.strip()[-300:]}"


REASON = _deepspeed_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

SFT = ["python", "stages/sft.py", "data/base", "data/prepared/demos.jsonl"]
PPO = ["python", "stages/ppo.py", "data/base", "data/sft", "data/prepared/ppo_prompts.jsonl",
       "data/calibrate/reward_norm.json", "data/rollouts"]
# ZeRO-3 also shards the frozen p_SFT/p_PT, and its PPO run accumulates micro-batches of one sequence
ONE_NODE = {"nnodes": 1, "rendezvous": None}
RUNS = {"single": {"runtime": {"num_processes": 1, "deepspeed_config": None, **ONE_NODE}, "ppo": {"micro_batch_size": None}},
        "zero2x2": {"runtime": {"num_processes": 2, "deepspeed_config": "configs/deepspeed/zero2.json", **ONE_NODE},
                    "ppo": {"micro_batch_size": None}},
        "zero3x2": {"runtime": {"num_processes": 2, "deepspeed_config": "configs/deepspeed/zero3.json", **ONE_NODE},
                    "ppo": {"micro_batch_size": 1}}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, reproduced_smoke):
    """The reproduced smoke repo (PPO's inputs: base, prepare, sft, calibrate, rollouts), SFT at 2 epochs."""
    from test_flows_support import copy_repo

    repo = copy_repo(reproduced_smoke[0], tmp_path_factory.mktemp("ds") / "repo")
    # fp32: sharded and single-process curves are compared to float noise; bf16 autocast rounds each run's
    # forwards a little differently, which swamps the KL (a small difference of two sums; test_precision.py)
    set_params(repo, {"sft": {"epochs": 2}, "runtime": {"precision": "fp32"}})
    return repo


def set_params(repo, override: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in override.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def curve(live_dir, keys: list[str]) -> list[dict]:
    return [{k: row[k] for k in keys if k in row} for row in live_rows(live_dir)]


def run_stage(repo, name: str, cmd: list[str], outputs: list[str]) -> None:
    set_params(repo, RUNS[name])
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    res = subprocess.run([*cmd, *[f"out/{name}/{o}" for o in outputs]], cwd=repo, capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0, f"{name}: {res.stderr[-4000:]}"


def assert_close(runs: dict[str, list[dict]], rel: float, strict_steps: int | None = None,
                 loose: tuple[float, float] = (5e-2, 5e-3)) -> None:
    """Every run's curve equals the single process's within `rel` (abs 1e-4) for its first `strict_steps`
    rows (all when None), and within `loose` (rel, abs) after them: from the second optimizer step on,
    Adam's update of a parameter whose gradient is at float-noise level is still of size lr, in a
    direction set by the summation order, so sharded runs drift apart by more than rounding (seen: a policy
    loss of 0.040 against 0.038 at the second PPO iteration)."""
    ref = runs["single"]
    for name, rows in runs.items():
        assert len(rows) == len(ref), name
        for step, (a, b) in enumerate(zip(ref, rows)):
            r, tol = (rel, 1e-4) if strict_steps is None or step < strict_steps else loose
            for key, value in a.items():
                assert b[key] == pytest.approx(value, rel=r, abs=tol), f"{name} step {step + 1} {key}"


def test_sft_curves_match_single_process(repo):
    for name in RUNS:
        run_stage(repo, name, SFT, ["sft", "sft.json", "sft_report.json", "sft_live"])
    runs = {name: curve(repo / "out" / name / "sft_live", ["loss", "grad_norm"]) for name in RUNS}
    assert len(runs["single"]) == 4
    assert_close(runs, rel=1e-3)
    reference = load_file(repo / "out" / "single" / "sft" / "model.safetensors")
    for name in RUNS:
        report = json.loads((repo / "out" / name / "sft_report.json").read_text())
        assert report["processes"] == RUNS[name]["runtime"]["num_processes"]
        saved = load_file(repo / "out" / name / "sft" / "model.safetensors")  # ZeRO-3: gathered, full shapes
        assert saved.keys() == reference.keys()
        for key, tensor in reference.items():
            assert saved[key].shape == tensor.shape
            assert (saved[key] - tensor).abs().max() < 1e-4, f"{name}: {key}"


def test_ppo_curves_match_single_process(repo):
    for name in RUNS:
        run_stage(repo, name, PPO, ["ppo", "ppo.json", "ppo_report.json", "ppo_live"])
    keys = ["reward_raw", "kl", "policy_loss", "value_loss", "response_length", "clip_frac"]
    runs = {name: curve(repo / "out" / name / "ppo_live", keys) for name in RUNS}
    assert len(runs["single"]) == 4  # 1 warm-up buffer swept twice (ppo.critic_warmup_epochs) + 2 PPO iterations
    # the first warm-up pass to 1e-3; the second already follows critic updates, where Adam turns float noise
    # into lr-sized steps (assert_close): with the eager attention kernel its value loss moved 0.12 %
    assert_close(runs, rel=1e-3, strict_steps=1)


def test_a_killed_zero3_ppo_run_resumes_from_its_sharded_checkpoint(repo):
    """2 processes, ZeRO-3: SIGKILLed (the whole process group) after a mid-run checkpoint, then rerun. The
    rerun loads DeepSpeed's shards of the weights and of both optimizers' states (their step counts are in the
    log: not a fresh optimizer), every rank's RNG states and the history, and ends as the uninterrupted run."""
    import signal
    import time

    long_run = {"ppo": {"iterations": 4, "checkpoint_min_seconds": 0}}
    set_params(repo, long_run | {"ppo": {**long_run["ppo"], "checkpoint_every": 0}})
    run_stage(repo, "zero3x2", PPO, ["ref/ppo", "ref/ppo.json", "ref/ppo_report.json", "ref/ppo_live"])
    set_params(repo, {"ppo": {**long_run["ppo"], "checkpoint_every": 2}})
    set_params(repo, RUNS["zero3x2"])
    outs = [f"out/resumed/{o}" for o in ("ppo", "ppo.json", "ppo_report.json", "ppo_live")]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    meta = repo / "out" / "resumed" / "checkpoints" / "ppo" / "latest" / "meta.json"
    proc = subprocess.Popen([*PPO, *outs], cwd=repo, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (meta.exists() and json.loads(meta.read_text())["step"] >= 4) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(meta.read_text())
    assert killed_at["sharded"] and killed_at["world_size"] == 2
    res = subprocess.run([*PPO, *outs], cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    # every rank logs the line (their output may interleave): read the numbers where they stand
    found = re.search(r"resuming from checkpoint \S+ at step (\d+) \(optimizer steps restored: actor (\d+), "
                      r"critic (\d+)\)", res.stderr)
    assert found, res.stderr[-3000:]
    step, actor_steps, critic_steps = map(int, found.groups())
    assert step == killed_at["step"] and actor_steps > 0 and critic_steps > 0, found.group(0)  # not a fresh optimizer
    keys = ["reward_raw", "kl", "policy_loss", "value_loss", "response_length", "clip_frac"]
    ref, resumed = (curve(repo / "out" / d, keys) for d in ("zero3x2/ref/ppo_live", "resumed/ppo_live"))
    assert len(ref) == len(resumed) == 6  # 2 warm-up passes + 4 PPO iterations
    assert_close({"single": ref, "resumed": resumed}, rel=1e-3)
    assert not (repo / "out" / "resumed" / "checkpoints" / "ppo").exists()  # cleared once the outputs are written
    set_params(repo, {"ppo": {"iterations": 2, "checkpoint_every": 4}})


def test_two_nodes_on_loopback_reproduce_the_two_process_curves(repo):
    """runtime.nnodes = 2 with one process each, on one machine: node 0 runs the stage as the pipeline flow does
    (`dvc repro`), node 1 runs the node flow (a real Prefect flow run), both with the same params.yaml; they meet
    at node 0's rendezvous and train as one node with two processes does."""
    import socket

    from conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_stage(repo, "zero2x2", SFT, ["nodes_ref/sft", "nodes_ref/sft.json", "nodes_ref/sft_report.json",
                                      "nodes_ref/sft_live"])
    set_params(repo, {"runtime": {"num_processes": 1, "nnodes": 2, "rendezvous": f"127.0.0.1:{port}",
                                  "deepspeed_config": "configs/deepspeed/zero2.json"}})
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen(["dvc", "repro", "-s", "-f", "sft"], cwd=repo, env={**env, "NODE_RANK": "0"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([sys.executable, "-m", "flows.node", "sft", "--node-rank", "1", "--repo", str(repo)],
                              cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    logs = [node.communicate(timeout=900)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "--nnodes=2 --node_rank=1" in logs[1] and f"--master_port={port}" in logs[1]
    assert json.loads((repo / "reports" / "sft.json").read_text())["processes"] == 2
    runs = {"single": curve(repo / "out" / "zero2x2" / "nodes_ref" / "sft_live", ["loss", "grad_norm"]),
            "nodes": curve(repo / "dvclive" / "sft", ["loss", "grad_norm"])}
    assert len(runs["single"]) == 4
    assert_close(runs, rel=1e-3)
    set_params(repo, {"runtime": ONE_NODE})
