"""Security defaults: Prefect listens on loopback only, and remote credentials stay where they belong.

Fast checks read the project's own files (params model, prefect.toml, Dockerfile, .dockerignore, the
deploy CLI). The slow ones start a real Prefect server and worker the way docs/orchestration.md does,
and run the real flow against a real S3 remote (moto) with canary credentials in the environment and in
.dvc/config.local, then search everything the run wrote for them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_flows_support import (
    background,
    free_port,
    moto_s3,
    prefect_env,
    run,
    s3_client,
    wait_ready,
    wait_until,
)

from srppo.config.files import ConfigError, dump_params, validate
from srppo.config.params import Params

CANARY = "SRPPO-CANARY-"  # every secret below contains it: one search finds any of them
SECRETS = {"AWS_ACCESS_KEY_ID": CANARY + "ENV-ID", "AWS_SECRET_ACCESS_KEY": CANARY + "ENV-SECRET"}
CONFIG_SECRETS = {"access_key_id": CANARY + "CFG-ID", "secret_access_key": CANARY + "CFG-SECRET"}
HOSTILE_PROFILE = ('active = "default"\n[profiles.default]\nPREFECT_SERVER_API_HOST = "0.0.0.0"\n'
                   'PREFECT_WORKER_WEBSERVER_HOST = "0.0.0.0"\nPREFECT_RUNNER_SERVER_HOST = "0.0.0.0"\n')


def test_params_refuse_credentials_without_echoing_them(tmp_path):
    raw = {"remote": {"access_key_id": CANARY + "ID"}, "sft": {"aws_secret": CANARY + "SECRET"}}
    with pytest.raises(ConfigError) as err:
        validate(raw, "params.yaml")
    message = str(err.value)
    assert "remote: Extra inputs are not permitted" in message
    assert "sft.aws_secret: Extra inputs are not permitted" in message
    assert "credentials of DVC remotes go in .dvc/config.local" in message
    assert CANARY not in message
    # The same through the CLI every stage's params check goes through: exit 2, nothing echoed.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**Params().model_dump(mode="json"), **raw}))
    res = subprocess.run([sys.executable, "-m", "srppo.config.presets", "--check", str(tmp_path / "params.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "remote: Extra inputs are not permitted" in res.stderr
    assert CANARY not in res.stdout + res.stderr


def _prefect_hosts(cwd: Path, home: Path, **env: str) -> dict:
    """The hosts Prefect would bind, as resolved by a Prefect process started in `cwd`."""
    code = ("import json; from prefect.settings import Settings; s = Settings(); "
            "print(json.dumps([s.server.api.host, s.worker.webserver.host, s.runner.server.host]))")
    out = run([sys.executable, "-c", code], cwd, prefect_env(home, **env))
    return dict(zip(("server", "worker", "runner"), json.loads(out.strip().splitlines()[-1]), strict=True))


def test_prefect_binds_loopback_in_the_project_whatever_the_profile(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    (home / "profiles.toml").write_text(HOSTILE_PROFILE)  # a machine-wide profile that opened everything
    assert _prefect_hosts(tmp_path, home)["server"] == "0.0.0.0"  # outside the project: the profile rules
    assert _prefect_hosts(ROOT, home) == dict.fromkeys(("server", "worker", "runner"), "127.0.0.1")
    # Exposing a server is an explicit choice for one command: the environment (or --host) wins.
    assert _prefect_hosts(ROOT, home, PREFECT_SERVER_API_HOST="10.0.0.5")["server"] == "10.0.0.5"


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rules: `**` any directories, `*` within one, a matched directory takes its contents,
    later `!` lines re-include."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex + "(?:/.*)?", path):
            excluded = not negate
    return excluded


SECRET_FILES = [".dvc/config.local", ".env", ".env.production", "flows/.env", "srppo/.env", ".aws/credentials",
                "configs/.aws/config", ".ssh/id_ed25519", ".netrc", "deploy.pem"]


def test_docker_build_context_and_image_carry_no_credentials():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    for path in SECRET_FILES:
        assert _dockerignore_excludes(patterns, path), f".dockerignore lets {path} into the build context"
    for path in ("srppo/io.py", "flows/pipeline.py", "pyproject.toml", "README.md", "configs/smoke.yaml"):
        assert not _dockerignore_excludes(patterns, path), f".dockerignore drops {path}, which the image needs"

    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = re.findall(r"^(COPY|ADD|ENV|ARG)\s+(.*)$", dockerfile, re.MULTILINE | re.IGNORECASE)
    sources = [src for kind, args in instructions if kind.upper() in ("COPY", "ADD")
               for src in args.split()[:-1] if not src.startswith("--")]
    assert sources, "no COPY found: the check would be vacuous"
    for src in sources:
        assert not re.search(r"config\.local|\.env|\.aws|\.ssh|credentials|\.netrc", src), f"COPY {src}"
    for kind, args in instructions:
        if kind.upper() in ("ENV", "ARG"):
            assert not re.search(r"AWS_(ACCESS|SECRET|SESSION)|SECRET|PASSWORD|TOKEN", args, re.IGNORECASE), args
    assert "PREFECT_SERVER_API_HOST=127.0.0.1" in dockerfile and "PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1" in dockerfile


def test_deploy_refuses_credentials_in_job_variables():
    from flows.deploy import main

    env = {"AWS_SECRET_ACCESS_KEY": CANARY + "X", "HF_HOME": "/cache/hf"}
    # Refused before any server is contacted: none runs here.
    with pytest.raises(ValueError, match=r"env \['AWS_SECRET_ACCESS_KEY'\] would store credentials") as err:
        main(["image", "--pool", "gpu", "--image", "srppo:latest", "--repo-url", "https://example.com/srppo.git",
              "--job-variables", json.dumps({"env": env})])
    assert CANARY not in str(err.value)


def _listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    found = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:  # a short-lived child (e.g. a git call) already gone
            pass
    return found


def _outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (what another host would connect to)."""
    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


@pytest.mark.slow
def test_server_and_worker_started_as_documented_listen_on_loopback_only(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    (home / "profiles.toml").write_text(HOSTILE_PROFILE)
    port, worker_port = free_port(), free_port()
    # docs/orchestration.md: `prefect server start` from the repository root, no --host.
    server = [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)]
    with background(server, prefect_env(home), ROOT, tmp_path / "server.log") as proc:
        api = f"http://127.0.0.1:{port}/api"
        wait_ready(proc, f"{api}/health", tmp_path / "server.log")
        env = prefect_env(home, api, PREFECT_WORKER_WEBSERVER_PORT=str(worker_port))
        # The pool and the gpu limit, created twice over: the second time finds them and creates nothing.
        ensure = ("from flows.deploy import ensure_pool; from flows.pipeline import ensure_gpu_limit\n"
                  "from prefect.client.orchestration import get_client\n"
                  "for _ in range(2): ensure_pool('srppo-local', 'process'); ensure_gpu_limit()\n"
                  "with get_client(sync_client=True) as c:\n"
                  "    print(c.read_work_pool('srppo-local').type,\n"
                  "          c.read_global_concurrency_limit_by_name('gpu').limit)")
        assert run([sys.executable, "-c", ensure], ROOT, env).strip().splitlines()[-1] == "process 1"
        worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "srppo-local", "--with-healthcheck"]
        with background(worker, env, ROOT, tmp_path / "worker.log") as wproc:
            wait_until(lambda: any(p == worker_port for _, p in _listening(wproc.pid)), 60, "the worker's health check")
            sockets = _listening(proc.pid) | _listening(wproc.pid)
            assert {("127.0.0.1", port), ("127.0.0.1", worker_port)} <= sockets
            assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
            for address in _outside_addresses():  # what another machine would reach: refused
                for p in (port, worker_port):
                    with pytest.raises(OSError):
                        socket.create_connection((address, p), timeout=2).close()


TOY_STAGES = {  # two stages without models: one writes a directory, the next reads it and keeps a metric
    "make.py": "import pathlib\np = pathlib.Path('data/made')\np.mkdir(parents=True)\n"
               "(p / 'x.txt').write_text('made')\n",
    "use.py": "import json, pathlib\npathlib.Path('metrics').mkdir(exist_ok=True)\n"
              "json.dump({'n': len(list(pathlib.Path('data/made').iterdir()))}, open('metrics/use.json', 'w'))\n",
}
TOY_DVC_YAML = {"stages": {
    "make": {"cmd": "python make.py", "deps": ["make.py"], "params": ["runtime.seed"], "outs": ["data/made"]},
    "use": {"cmd": "python use.py", "deps": ["use.py", "data/made"],
            "metrics": [{"metrics/use.json": {"cache": False}}]},
}}


def _toy_repo(path: Path, endpoint: str) -> Path:
    """The project's flows over a two-stage pipeline without models; an S3 remote with credentials in
    .dvc/config.local (`dvc remote modify --local`), as docs/orchestration.md says to set them."""
    path.mkdir()
    (path / "dvc.yaml").write_text(yaml.safe_dump(TOY_DVC_YAML, sort_keys=False))
    for name, code in TOY_STAGES.items():
        (path / name).write_text(code)
    (path / "params.yaml").write_text(dump_params(Params()))
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"], [*dvc, "init", "-q"],
                [*dvc, "remote", "add", "-d", "shared", "s3://srppo/dvc"],
                [*dvc, "remote", "modify", "shared", "endpointurl", endpoint],
                *([*dvc, "remote", "modify", "--local", "shared", k, v] for k, v in CONFIG_SECRETS.items()),
                ["git", "add", "-A"], ["git", "commit", "-qm", "toy pipeline"]):
        run(cmd, path)
    assert CANARY in (path / ".dvc" / "config.local").read_text()
    return path


def _bytes_under(root: Path, skip: set[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p not in skip and ".git" not in p.parts}


@pytest.mark.slow
def test_remote_credentials_never_reach_lineage_artifacts_logs_or_git(tmp_path):
    with moto_s3(tmp_path / "moto.log") as endpoint:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="srppo")
        repo = _toy_repo(tmp_path / "repo", endpoint)
        home = tmp_path / "prefect"
        env = prefect_env(home, **SECRETS, AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/nonexistent",
                          AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
        log = run([sys.executable, "-m", "flows.pipeline"], repo, {**env, "PYTHONPATH": str(ROOT)})
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="srppo").get("Contents", [])]
        assert keys, "the flow pushed nothing: the credentials were never used"
        remote = b"".join(k.encode() + s3.get_object(Bucket="srppo", Key=k)["Body"].read() for k in keys)

    lineage = json.loads((repo / "lineage.json").read_text())
    assert lineage["stages"]["use"]["status"] == "ran" and lineage["run"]["experiment_rev"]
    written = {**_bytes_under(repo, {repo / ".dvc" / "config.local"}), **_bytes_under(home, set())}
    database = b"".join(v for p, v in written.items() if p.name.startswith("prefect.db"))
    # The searches can see what they search: the lineage artifact and the flow's log lines are in the database.
    assert b"srppo-lineage" in database and b"stages: {" in database
    git_history = run(["git", "log", "--all", "-p", "--format=%H %B"], repo)  # experiment commits included
    assert "lineage.json" in git_history
    leaks = [str(p) for p, data in written.items() if CANARY.encode() in data]
    leaks += ["flow output"] * (CANARY in log) + ["git history"] * (CANARY in git_history)
    leaks += ["S3 remote"] * (CANARY.encode() in remote)
    assert leaks == [], f"credentials found in {leaks}"
