"""DVC and git commands as a stage job issues them, on one clone of the repository.

Each call is a `dvc` subprocess, exactly what a person would type, run with the same interpreter as
the flow so that `python` in a stage command resolves to the environment that has `srppo`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Log = Callable[[str], None]


class CommandError(RuntimeError):
    pass


def _env(repo: Path) -> dict[str, str]:
    # Stage commands import `srppo` from the clone they run in: the code DVC hashed is the code that
    # runs, even in an image whose installed copy is older than the clone.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(repo), env.get("PYTHONPATH", "")] if p)
    return env


def sh(args: list[str], repo: Path, log: Log | None = None) -> str:
    """Run a command in `repo`, streaming its output to `log` line by line (stages run for minutes)."""
    proc = subprocess.Popen(args, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if log and line.strip():
            log(line.rstrip())
    if proc.wait() != 0:
        tail = "".join(lines[-40:])
        raise CommandError(f"`{' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{tail}")
    return "".join(lines)


def dvc(args: list[str], repo: Path, log: Log | None = None) -> str:
    return sh([sys.executable, "-m", "dvc", *args], repo, log)


def _open(repo: Path):
    # In-process DVC for data transfers: a `dvc` subprocess spends about a second importing itself,
    # which is most of a cached stage's cost; `repro` stays a subprocess for its streamed output.
    from dvc.repo import Repo

    return Repo(str(repo))


def has_remote(repo: Path, remote: str | None) -> bool:
    """True when `remote` is given or the repo names a default one (else data stays on this machine)."""
    with _open(repo) as r:
        return bool(remote or r.config["core"].get("remote"))


def pull(repo: Path, paths: list[str], remote: str | None, log: Log | None = None) -> None:
    """Fetch and check out exactly `paths`; what the local cache already holds costs no transfer."""
    if not paths:
        return
    with _open(repo) as r:
        stats = r.pull(targets=[str(repo / p) for p in paths], remote=remote)["stats"]
    if log:
        log(f"pulled {', '.join(paths)}: {stats.get('fetched', 0)} files fetched from the remote")


class CorruptCacheError(RuntimeError):
    pass


_verified: set[Path] = set()  # cache objects found intact by this process: hashed once per run


def verify_cached(repo: Path, paths: list[str], lock: dict[str, dict], log: Log | None = None) -> int:
    """Hash the cache objects `dvc.lock` (`lock`: its stage entries) records for the cached data `paths` against
    their names, before a stage uses them; CorruptCacheError naming each bad one. DVC never rereads an object:
    a corrupt one (a disk fault, a copy made outside DVC) is checked out as it is and trained on. Objects not in
    this cache are left to `dvc pull` / `dvc repro`, which fetch or complain. Returns the objects hashed."""
    from tools.storecheck import file_md5

    with _open(repo) as r:
        cache = Path(r.cache.local.path)
    recorded = {item["path"]: item.get("md5") or item.get("hash", "")
                for entry in lock.values() for item in entry.get("outs", [])}
    bad, hashed = [], 0
    for path in paths:
        owner = next((out for out in recorded if path == out or path.startswith(out.rstrip("/") + "/")), None)
        if owner is None or not recorded[owner]:
            continue
        oid = recorded[owner]
        objects = [(owner, cache / oid[:2] / oid[2:])]
        if oid.endswith(".dir") and objects[0][1].exists():
            objects += [(f"{owner}/{f['relpath']}", cache / f["md5"][:2] / f["md5"][2:])
                        for f in json.loads(objects[0][1].read_bytes())]
        for name, obj in objects:
            if obj in _verified or not obj.exists():
                continue
            hashed += 1
            if file_md5(obj) != obj.parent.name + obj.name.removesuffix(".dir"):
                bad.append(f"{name}: its cache object {obj} does not hash to its name")
            else:
                _verified.add(obj)
    if bad:
        raise CorruptCacheError(
            "corrupt DVC cache objects, which DVC would check out as they are: " + "; ".join(bad)
            + f". Remove them with `python -m tools.storecheck --repo {repo} --repair`, then `dvc pull` them again "
            "(or rerun the stage that made them).")
    if log and hashed:
        log(f"verified {hashed} cache objects of {', '.join(paths)}")
    return hashed


def repro(repo: Path, stage: str, log: Log | None = None) -> str:
    """Run one stage if DVC says it changed: 'ran', 'restored' (from DVC's run cache) or 'skipped'.

    --allow-missing: an unchanged stage whose outputs live only on the remote (a fresh clone) is
    skipped, not recomputed; its inputs were pulled first, so a changed input is still seen.
    """
    out = dvc(["repro", "--single-item", "--allow-missing", stage], repo, log)
    if re.search(rf"Running stage '{re.escape(stage)}'", out):
        return "ran"
    # DVC's run cache: these deps and params were seen before, their outputs are checked out instead.
    return "restored" if "is cached - skipping run" in out else "skipped"


def push(repo: Path, stage: str, remote: str | None, log: Log | None = None) -> None:
    with _open(repo) as r:
        count = r.push(targets=[f"{repo / 'dvc.yaml'}:{stage}"], remote=remote)
    if log:
        log(f"pushed outputs of {stage}: {count} files transferred")


def git_commit(repo: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether tracked files differ from it); (None, True) outside git or before a commit."""
    try:
        head = sh(["git", "rev-parse", "HEAD"], repo).strip()
    except CommandError:
        return None, True
    dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).strip())
    return head, dirty


def check_git_identity(repo: Path) -> None:
    """A recorded run ends in a commit (the DVC experiment): without a git identity it would fail there."""
    missing = [key for key in ("user.name", "user.email")
               if subprocess.run(["git", "config", key], cwd=repo, capture_output=True).returncode != 0]
    if missing:
        raise CommandError(
            f"git {' and '.join(missing)} not configured in {repo}: a recorded run saves a DVC experiment, "
            f"which is a git commit. Set them (git config --global user.name 'Your Name'; git config --global "
            f"user.email you@example.com) or run without recording (--no-record, record=False in the run form).")


def check_remote(repo: Path, remote: str | None) -> str:
    """The remote's name and URL once it answers; an unknown name or an unreachable store fails here."""
    with _open(repo) as r:
        name = remote or r.config["core"].get("remote")
        try:
            odb = r.cloud.get_remote_odb(name)
            url = r.config["remote"][name]["url"]
            odb.fs.exists(odb.path)  # a listing call: credentials, endpoint and bucket are all exercised
        except Exception as err:  # noqa: BLE001 (DVC, fsspec and the stores' SDKs each raise their own)
            raise CommandError(f"DVC remote {name!r} is not reachable from {repo}: {err}. Check `dvc remote list` "
                               f"and the remote's credentials (docs/orchestration.md, \"The shared DVC remote\").") \
                from None
    return f"{name} ({url})"


def save_experiment(repo: Path, name: str, include: list[str], log: Log | None = None) -> str:
    """Record params.yaml, dvc.lock and metrics as a DVC experiment (a git ref; HEAD does not move)."""
    untracked = [p for p in include if (repo / p).exists() and not _tracked(repo, p) and not _ignored(repo, p)]
    args = ["exp", "save", "--force", "--name", name, "-m", f"srppo flow run {name}"]
    dvc([*args, *(a for p in untracked for a in ("-I", p))], repo, log)
    return _exp_rev(repo, name)


def _tracked(repo: Path, path: str) -> bool:
    return bool(sh(["git", "ls-files", "--", path], repo).strip())


def _ignored(repo: Path, path: str) -> bool:
    # git refuses to commit ignored paths; the repository chose to keep them out of history.
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=repo, check=False).returncode == 0


def _exp_rev(repo: Path, name: str) -> str:
    # Experiment refs live under refs/exps/<baseline prefix>/<name>; find ours by its name.
    refs = sh(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"], repo).splitlines()
    revs = [line.split()[0] for line in refs if line.endswith(f"/{name}")]
    if not revs:
        raise CommandError(f"dvc exp save did not create experiment {name!r}")
    return revs[0]
