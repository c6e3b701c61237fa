"""Shared by the orchestration tests: a project repository on the tiny model, and real local servers.

Every server here listens on 127.0.0.1 only, is started by the test that needs it and is stopped
when it ends; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT))  # `flows` is a top-level package of the checkout, not installed

from srppo.config.files import apply_preset, deep_merge, dump_params, validate

STAGES = ["base", "prepare", "sft", "diagnose", "calibrate", "rollouts", "ppo", "eval"]


def tiny_overrides(tiny_dir: Path) -> dict:
    """The smoke preset's `base` pointed at the tiny local Llama (same code path as a hub id)."""
    return {"base": {"name_or_path": str(tiny_dir), "gguf_package": None, "gguf_file": None}}


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


def checkout_files() -> list[str]:
    """The checkout's files as a clone would hold them: tracked ones, plus new ones git does not ignore,
    except an untracked `dvc.lock`: the state of a `dvc repro` run in this checkout (the Quickstart's), not
    code under test; a test repository starts without one, as a clone does."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split("\0"))
    return [p for p in listed.split("\0") if p and (ROOT / p).is_file()
            and (p in tracked or Path(p).name != "dvc.lock")]


def full_clone(path: Path) -> Path:
    """A `git clone` of the project, as a user makes one, with this checkout's uncommitted edits laid over it
    (so the tests exercise the code under test, not only the last commit); committed with a git identity."""
    run(["git", "clone", "-q", str(ROOT), str(path)], ROOT)
    for rel in checkout_files():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, path / rel)
    for cmd in (["git", "config", "user.email", "ci@example.com"], ["git", "config", "user.name", "ci"],
                ["dvc", "config", "core.autostage", "false"], ["git", "add", "-A"]):
        run(cmd, path)
    subprocess.run(["git", "commit", "-qm", "the checkout under test"], cwd=path, check=False)  # may be clean
    return path


def tiny_smoke_params(tiny_dir: Path) -> dict:
    """The smoke preset on the tiny model, as a whole params dict."""
    smoke = apply_preset(ROOT / "configs" / "smoke.yaml").model_dump(mode="json")
    return validate(deep_merge(smoke, tiny_overrides(tiny_dir))).model_dump(mode="json")


def make_repo(path: Path, tiny_dir: Path) -> Path:
    """A full clone of the project whose params.yaml is the smoke preset on the tiny model, committed.

    The clone keeps the repository's default DVC remote (`sibling-dir`, a directory beside the clone)."""
    full_clone(path)
    (path / "params.yaml").write_text(dump_params(validate(tiny_smoke_params(tiny_dir))))
    run([sys.executable, "tools/dvc_pipelines.py"], path)  # the tiny model's directory becomes base's input
    run(["git", "commit", "-qam", "smoke preset on the tiny model"], path)
    return path


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a reproduced repository (git history, DVC cache, outputs, dvc.lock): as up to date as `src`."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def clone(origin: Path, path: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    run(["git", "config", "user.email", "ci@example.com"], path)
    run(["git", "config", "user.name", "ci"], path)
    return path


def prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict:
    """Environment for a Prefect process: its own PREFECT_HOME, no analytics, ephemeral API unless `api_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", NO_PROXY="127.0.0.1,localhost",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), **extra)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except OSError:
        return False


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    wait_until(lambda: proc.poll() is not None or _answers(url), timeout, f"{proc.args[0]} at {url}")
    assert proc.poll() is None, f"{' '.join(map(str, proc.args))} exited:\n{log.read_text()[-3000:]}"


@contextmanager
def background(cmd: list[str], env: dict, cwd: Path, log: Path, ready_url: str | None = None):
    """A process for the duration of the block (its own process group, stopped on exit)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if ready_url:
            wait_ready(proc, ready_url, log)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def prefect_server(home: Path, log: Path):
    """A real Prefect server (API + UI) on 127.0.0.1; yields its API URL and a wait for its health check.

    Starting takes seconds (database migrations): the caller waits only when it needs the API.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # `--port` does not reach the UI's own settings: without this the UI served on `port` calls :4200.
    env = prefect_env(home, PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")
    with background(cmd, env, home.parent, log) as proc:
        yield f"http://127.0.0.1:{port}/api", lambda: wait_ready(proc, f"http://127.0.0.1:{port}/api/health", log)


@contextmanager
def moto_s3(log: Path):
    """A real S3-compatible server (moto) on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with background(cmd, dict(os.environ), log.parent, log, f"http://127.0.0.1:{port}/moto-api/"):
        yield f"http://127.0.0.1:{port}"


# moto takes any credentials; these keep boto3 away from the user's own files.
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def add_s3_remote(repo: Path, endpoint: str, name: str = "shared") -> None:
    """The S3 bucket `srppo` at `endpoint` as this clone's default remote, as docs/orchestration.md says."""
    run(["dvc", "remote", "add", "--local", "-d", name, "s3://srppo/dvc"], repo)
    run(["dvc", "remote", "modify", "--local", name, "endpointurl", endpoint], repo)


def s3_client(endpoint: str):
    """A boto3 client of the moto server at `endpoint` (moto takes any credentials)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def lineage(repo: Path) -> dict:
    return json.loads((repo / "lineage.json").read_text())


def statuses(record: dict) -> dict[str, str]:
    return {name: s["status"] for name, s in record["stages"].items()}


def lock(repo: Path) -> dict:
    # dvc.lock as DVC wrote it; PyYAML is enough to compare hashes.
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
