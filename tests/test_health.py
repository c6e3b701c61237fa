"""Numeric health (srppo/runtime/health.py) and the integrity of a stage's results: a diverged run fails naming
the step and the quantity and saves nothing; a failed run keeps the previous results; a stage fails if
params.yaml changed under it, and dies with the `dvc repro` that started it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_flows_support import copy_repo
from test_method_runs import SMALL

from srppo.config.files import deep_merge, validate
from srppo.config.params import SFTConfig
from srppo.data.prepare import prepare
from srppo.data.records import write_jsonl
from srppo.io import write_json
from srppo.methods.ppo.run import PPOInputs, run_ppo
from srppo.methods.sft import encode_demos, train_sft
from srppo.models.loading import load_causal_lm, load_tokenizer, setup_runtime
from srppo.runtime.health import DivergenceError, repetitive, repetitive_share
from srppo.scoring.rewards import RewardNormalizer

CPU = torch.device("cpu")
DEMOS = [{"id": f"d{i}", "messages": [{"role": "user", "content": f"Say {i}."}],
          "response": f"{i} it is, said the {i}."} for i in range(16)]


def test_repetitive_responses_are_long_runs_of_a_few_3_grams():
    assert repetitive([7, 8] * 10)  # "givinggiving..."
    assert not repetitive(list(range(20)))
    assert not repetitive([7, 8] * 5)  # short answers are never called degenerate
    assert repetitive_share([[7, 8] * 10, list(range(20))]) == 0.5


def test_sft_whose_loss_blows_up_fails_naming_the_step(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)
    cfg = SFTConfig(batch_size=4, lr=1.0, epochs=3, warmup_ratio=0.0)
    with pytest.raises(DivergenceError, match=r"^sft: diverged at step 2: loss [\d.]+ is over 11\.9 \(the first "
                                              r"step's .*nothing was saved\. Lower sft\.lr"):
        train_sft(model, tok, encode_demos(tok, DEMOS, 128), cfg, seed=0)


def test_sft_whose_last_update_leaves_non_finite_weights_fails(tiny_dir):
    # the damage of the last step shows in no later step's loss: the check after the last update sees it
    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)

    def last_step_breaks_a_weight(row):
        if row["step"] == 4:
            with torch.no_grad():
                model.model.layers[1].mlp.up_proj.weight[0, 0] = float("inf")
    with pytest.raises(DivergenceError, match=r"^sft: diverged at step 4: 1 of \d+ parameter tensors of the model hold "
                                              r"NaN/inf \(model\.layers\.1\.mlp\.up_proj\.weight\)"):
        train_sft(model, tok, encode_demos(tok, DEMOS, 128), SFTConfig(batch_size=4, lr=1e-3, epochs=1), seed=0,
                  on_step=last_step_breaks_a_weight)


@pytest.fixture(scope="module")
def ppo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_data")
    for name, recs in prepare(validate(SMALL).prepare).items():
        write_jsonl(root / f"{name}.jsonl", recs)
    write_json(root / "norm.json", RewardNormalizer().to_dict())
    return root


def ppo(ppo_data, tiny_dir, tiny_sft_dir, **ppo_params):
    params = validate(deep_merge(SMALL, {"ppo": {"critic_warmup_buffers": 0, **ppo_params}}))
    inputs = PPOInputs(tiny_dir, tiny_sft_dir, ppo_data / "ppo_prompts.jsonl", ppo_data / "norm.json", None)
    result = run_ppo(params, inputs, *setup_runtime(params.runtime))
    result.close()
    return result


def test_ppo_whose_actor_drifts_past_the_kl_ceiling_fails_naming_the_step(ppo_data, tiny_dir, tiny_sft_dir):
    # at actor_lr 1 the tiny actor's samples sit ~44 nats from p_SFT after one update (the 135M model at
    # actor_lr 10: 98.7, answering "givinggiving...")
    with pytest.raises(DivergenceError, match=r"^ppo: diverged at step 2: the buffer's KL to p_SFT, [\d.]+ nats per "
                                              r"response, is over ppo\.kl_ceiling=25; nothing was saved"):
        ppo(ppo_data, tiny_dir, tiny_sft_dir, actor_lr=1.0)


def test_ppo_checks_the_final_actor_after_its_last_update(ppo_data, tiny_dir, tiny_sft_dir):
    healthy = ppo(ppo_data, tiny_dir, tiny_sft_dir, actor_lr=1e-3, iterations=2)
    assert healthy.final_check["logprobs_finite"] and healthy.final_check["kl"] < 25
    assert healthy.final_check["repetitive_share"] == 0.0
    # the last update's drift shows in no iteration's samples, only in the final actor's own
    with pytest.raises(DivergenceError, match=r"^ppo: diverged at step 1: the final actor's KL to p_SFT"):
        ppo(ppo_data, tiny_dir, tiny_sft_dir, actor_lr=1.0, iterations=1)


# --- through `dvc repro`, as a person runs it ------------------------------------------------------------

def set_params(repo: Path, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def repro(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", "repro", *args], cwd=repo, capture_output=True, text=True, timeout=600)


def results(repo: Path, stage: str) -> dict[str, bytes]:
    """The stage's git-kept results (metrics, report, curves) as bytes, by path."""
    paths = [repo / "metrics" / f"{stage}.json", repo / "reports" / f"{stage}.json",
             *sorted((repo / "dvclive" / stage).rglob("*"))]
    return {str(p.relative_to(repo)): p.read_bytes() for p in paths if p.is_file()}


@pytest.mark.slow
def test_a_failed_run_keeps_the_previous_results_and_a_diverged_one_saves_nothing(reproduced_smoke, tmp_path):
    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    before = results(repo, "sft")
    lock = (repo / "dvc.lock").read_text()
    recorded_lr = yaml.safe_load((repo / "params.yaml").read_text())["sft"]["lr"]

    # a bad value fails in the stage's first second: DVC has run it, and kept its uncached results (persist)
    set_params(repo, sft__lr=float("inf"))
    res = repro(repo, "sft")
    assert res.returncode != 0 and "sft.lr" in res.stderr
    assert results(repo, "sft") == before and (repo / "dvc.lock").read_text() == lock
    assert not (repo / "data" / "sft").exists()  # DVC removes cached outputs before a run; its cache keeps them

    # a diverged run fails at the step, names the quantity, and writes no model
    set_params(repo, sft__lr=1.0)
    res = repro(repo, "sft")
    assert res.returncode != 0
    assert "sft: diverged at step 2: loss" in res.stderr and "nothing was saved" in res.stderr
    assert not (repo / "data" / "sft").exists() and (repo / "dvc.lock").read_text() == lock
    assert (repo / "metrics" / "sft.json").read_bytes() == before["metrics/sft.json"]

    # back to the recorded params: the previous model comes back from the cache, and nothing reruns
    set_params(repo, sft__lr=recorded_lr)
    subprocess.run(["dvc", "checkout", "sft"], cwd=repo, check=True, capture_output=True)
    assert (repo / "data" / "sft" / "model.safetensors").exists()
    res = repro(repo, "sft")
    assert res.returncode == 0 and "Running stage" not in res.stdout


def stage_process(repo: Path, script: str, timeout: float = 120) -> int:
    """The pid of the python process running `stages/<script>` in `repo`, once it has loaded its params."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == str(repo) and f"stages/{script}".encode() in cmd and b"python" in cmd[0]:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no stages/{script} process in {repo} after {timeout} s")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except OSError:
        return False
    return state != "Z"


def test_a_stage_whose_starter_died_before_it_watched_for_that_ends_itself(tmp_path):
    """The start of a stage: `dvc repro` starts python, which imports srppo (recording its parent) and then, seconds
    of torch imports later, asks to die with its parent. Killed in between, the starter is gone by then and the
    process belongs to init: `die_with_parent` ends it rather than let it run on as an orphan."""
    marker = tmp_path / "ran_on"
    child = (f"import srppo, time; time.sleep(1.5); from srppo.runtime.stage import die_with_parent; "
             f"die_with_parent(); open({str(marker)!r}, 'w').write('orphan')")
    # the shell outlives the import of srppo (tens of milliseconds), not the wait before die_with_parent
    starter = subprocess.run(["bash", "-c", f'{sys.executable} -c "{child}" >/dev/null 2>&1 & echo $!; sleep 0.7'],
                             capture_output=True, text=True, check=True)
    pid = int(starter.stdout)
    deadline = time.time() + 30
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and not marker.exists()


def test_a_process_forked_after_the_import_lives_while_its_forker_does(tmp_path):
    """A fork's parent is its forker, not the parent the package recorded at import: no false orphan."""
    from srppo.runtime import stage

    marker = tmp_path / "ran_on"
    pid = os.fork()
    if pid == 0:  # the child: ask to die with its parent, which is alive, then carry on
        stage._read.pop("watching", None)  # as a fresh process: the request is made, not skipped
        stage.die_with_parent()
        marker.write_text("alive")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and marker.read_text() == "alive"


@pytest.mark.slow
def test_a_stage_fails_if_params_change_under_it_and_dies_with_dvc(reproduced_smoke, tmp_path):
    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    lock = (repo / "dvc.lock").read_text()
    set_params(repo, sft__epochs=300.0)  # long enough to act on it while it runs
    proc = subprocess.Popen(["dvc", "repro", "sft"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = ""
    while "[sft] train" not in seen:  # the stage has read its params and is training
        line = proc.stderr.readline()
        assert line, "the stage ended before training"
        seen += line
    set_params(repo, sft__warmup_ratio=0.1)
    out, err = proc.communicate(timeout=600)
    err = seen + err
    assert proc.returncode != 0, out[-2000:] + err[-2000:]
    assert "params.yaml changed while the stage ran (sft.warmup_ratio: 0.05 -> 0.1)" in err
    assert (repo / "dvc.lock").read_text() == lock  # nothing recorded against values the run never read
    report = json.loads((repo / "reports" / "sft.json").read_text())
    assert set(report["params_read"]) == {"file", "sha256", "overrides"}  # the last good run's record

    # kill -9 of `dvc repro`: the stage it started goes with it, so a rerun cannot start a second copy
    proc = subprocess.Popen(["dvc", "repro", "sft"], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = stage_process(repo, "sft.py")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while alive(stage) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(stage)
