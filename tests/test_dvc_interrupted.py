"""A `dvc push` / `dvc pull` SIGKILLed mid-transfer leaves the remote and the cache whole.

Real DVC repositories on generated files (no models): a push into a local-directory remote, and a pull
from it into a fresh clone, each killed (the whole process group) while a 16 MB object is half copied;
then the same over S3 (moto on 127.0.0.1). After the kill every stored object hashes to its name,
`dvc status -c` names exactly what is missing, and a rerun completes to a remote or cache that verifies
and reproduces the files bit for bit. `tools.storecheck` cleans up what DVC leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT
from test_flows_support import AWS, moto_s3, run, s3_client

from tools.storecheck import repair_store, verify_store

BIG = 16 << 20  # long enough to copy that the kill lands inside it
N_SMALL, N_BIG = 150, 3
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def dvc(args: list[str], repo: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo, ENV)


def status_cloud(repo: Path) -> dict[str, str]:
    """`dvc status -c`: path -> 'new' (in the cache, not the remote) or 'deleted' (the reverse)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "-c", "--json"], cwd=repo, env=ENV,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def make_data_repo(path: Path, remote_url: str, n_small: int = N_SMALL, n_big: int = N_BIG) -> dict[str, str]:
    """A git + DVC repo tracking data/blob (many small files, a few big ones); returns relpath -> md5."""
    rng = random.Random(0)
    blob = path / "data" / "blob"
    blob.mkdir(parents=True)
    sizes = {f"s{i:03d}.bin": 16384 for i in range(n_small)} | {f"big{i}.bin": BIG for i in range(n_big)}
    for name, size in sizes.items():
        (blob / name).write_bytes(rng.randbytes(size))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"]):
        run(cmd, path)
    dvc(["init", "-q"], path)
    dvc(["add", "-q", "data/blob"], path)
    dvc(["remote", "add", "-d", "r", remote_url], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "data"], path)
    return {f"data/blob/{n}": md5(blob / n) for n in sizes}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def objects(store: Path) -> list[Path]:
    return [p for p in store.glob("files/md5/??/*") if not p.name.endswith(".tmp")]


def partial_temps(store: Path) -> list[Path]:
    # Only a big object's copy lasts long enough to be seen; more than 1 MB of it is written.
    return [p for p in store.glob("files/md5/??/*.tmp") if 1 << 20 < size(p) < BIG]


def mid_transfer(store: Path, total: int) -> bool:
    """Some objects stored, not all, and preferably a big one half copied.

    Whether a half-written copy is ever visible depends on the kernel (one copy_file_range call can write
    16 MB at once), so a third of the objects stored is also a kill point; the checks cover both states.
    """
    if not store.exists():
        return False
    stored = len(objects(store))
    return 0 < stored < total and (bool(partial_temps(store)) or stored >= total // 3)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between the listing and the stat
        return -1


def kill_when(args: list[str], cwd: Path, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Start `dvc ARGS` and SIGKILL its process group as soon as `ready()` holds while it still runs."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=cwd, env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline and not frozen_when(proc, ready):
            time.sleep(0.002)
        assert proc.poll() is None, f"dvc {args[0]} ended before it could be killed:\n{proc.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, f"dvc {args[0]} never reached the state to kill it in"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def frozen_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> bool:
    """True with the process group stopped (SIGSTOP) in a state where `ready()` holds.

    On a fast disk a 16 MB copy finishes within milliseconds, so a state seen while dvc runs may be gone
    by the time SIGKILL lands: stop the group first, let in-flight writes settle, and look again.
    """
    if not ready():
        return False
    os.killpg(proc.pid, signal.SIGSTOP)
    time.sleep(0.05)
    if ready():
        return True
    os.killpg(proc.pid, signal.SIGCONT)
    return False


def missing(files: dict[str, str], stored: set[str]) -> set[str]:
    return {path for path, h in files.items() if h not in stored}


def assert_clone_reproduces(origin: Path, files: dict[str, str], where: Path) -> None:
    """A fresh git clone pulls from the remote and gets every file bit for bit."""
    run(["git", "clone", "-q", str(origin), str(where)], origin.parent)
    dvc(["pull", "-q"], where)
    assert {p: md5(where / p) for p in files} == files


def test_killed_push_to_a_local_remote_leaves_only_whole_objects(tmp_path):
    remote, repo = tmp_path / "remote", tmp_path / "repo"
    files = make_data_repo(repo, str(remote))
    kill_when(["push"], repo, lambda: mid_transfer(remote, len(files)))

    # a) a big object being copied is under a temporary name, half written; everything named is whole
    temps = partial_temps(remote)
    report = verify_store(remote / "files/md5", stale_after=0)
    assert report.corrupt == [] and report.incomplete == [] and set(temps) <= set(report.temp)
    stored = {p.parent.name + p.name for p in objects(remote)}
    assert 0 < len(stored) < len(files)
    # b) dvc status -c names exactly the files the remote lacks, and the directory (its manifest comes last)
    assert status_cloud(repo) == {"data/blob": "new", **dict.fromkeys(missing(files, stored), "new")}

    # c) a rerun completes; DVC leaves the killed copy's temporary file, which the store check removes
    dvc(["push", "-q"], repo)
    assert status_cloud(repo) == {}
    check = [sys.executable, "-m", "tools.storecheck", "--repo", str(repo), "--stale-after", "0"]
    found = subprocess.run(check, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert found.returncode == (1 if report.temp else 0), found.stdout + found.stderr
    assert f"0 corrupt, 0 incomplete directory manifests, {len(report.temp)} stale" in found.stdout
    assert ("removed" in run([*check, "--repair"], ROOT, ENV)) == bool(report.temp)
    after = verify_store(remote / "files/md5", stale_after=0)
    assert after.ok and after.objects == len(files) + 1  # every file and the directory manifest
    assert_clone_reproduces(repo, files, tmp_path / "fresh")


def test_killed_pull_from_a_local_remote_leaves_the_cache_whole(tmp_path):
    remote, origin, clone = tmp_path / "remote", tmp_path / "origin", tmp_path / "clone"
    files = make_data_repo(origin, str(remote))
    dvc(["push", "-q"], origin)
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    cache = clone / ".dvc" / "cache"
    kill_when(["pull"], clone, lambda: mid_transfer(cache, len(files)))

    # a) the cache holds whole objects and the half-copied one under a temporary name; nothing checked out
    report = verify_store(cache / "files/md5", manifests=False, stale_after=0)
    assert report.corrupt == [] and set(partial_temps(cache)) <= set(report.temp)
    stored = {p.parent.name + p.name for p in objects(cache)}
    assert 0 < len(stored) < len(files)
    assert not (clone / "data" / "blob").exists()
    # b) dvc status -c names exactly the files the cache lacks
    assert status_cloud(clone) == dict.fromkeys(missing(files, stored), "deleted")

    # c) a rerun completes and the checkout is bitwise the original; the stale temp file is removed
    dvc(["pull", "-q"], clone)
    assert {p: md5(clone / p) for p in files} == files
    assert status_cloud(clone) == {}
    assert "up to date" in dvc(["status"], clone)
    repair_store(verify_store(cache / "files/md5", manifests=False, stale_after=0))
    assert verify_store(cache / "files/md5", manifests=False, stale_after=0).ok


def test_a_corrupt_object_on_the_remote_is_found_and_pushed_again(tmp_path):
    remote, repo = tmp_path / "remote", tmp_path / "repo"
    files = make_data_repo(repo, str(remote), n_small=20, n_big=0)
    dvc(["push", "-q"], repo)
    victim = remote / "files/md5" / files["data/blob/s007.bin"][:2] / files["data/blob/s007.bin"][2:]
    victim.write_bytes(b"bit rot")  # a disk fault, or a copy made outside DVC
    # DVC trusts the directory manifest on the remote: it neither sees the damage nor would push again.
    assert status_cloud(repo) == {}

    report = verify_store(remote / "files/md5")
    assert report.corrupt == [victim]
    assert [p.suffix for p in report.incomplete] == [".dir"]  # the manifest that vouches for it
    assert set(repair_store(report)) == {victim, *report.incomplete}
    assert status_cloud(repo) == {"data/blob": "new", "data/blob/s007.bin": "new"}
    dvc(["push", "-q"], repo)
    assert verify_store(remote / "files/md5").ok
    assert_clone_reproduces(repo, files, tmp_path / "fresh")


def s3_contents(endpoint: str) -> dict[str, bytes]:
    s3 = s3_client(endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="srppo").get("Contents", [])]
    return {k: s3.get_object(Bucket="srppo", Key=k)["Body"].read() for k in keys}


def s3_count(endpoint: str) -> int:
    return s3_client(endpoint).list_objects_v2(Bucket="srppo").get("KeyCount", 0)


def assert_s3_objects_whole(endpoint: str) -> set[str]:
    """Every object under the remote's files/md5/ hashes to its key; returns the stored hashes."""
    stored = {}
    for key, body in s3_contents(endpoint).items():
        oid = "".join(key.split("/")[-2:]).removesuffix(".dir")
        assert hashlib.md5(body).hexdigest() == oid, f"{key} does not hash to its name"
        stored[oid] = key
    return set(stored)


@pytest.mark.slow
def test_killed_push_and_pull_over_s3_keep_remote_and_cache_whole(tmp_path, monkeypatch):
    for key, value in AWS.items():
        monkeypatch.setitem(ENV, key, value)
    with moto_s3(tmp_path / "moto.log") as endpoint:
        s3_client(endpoint).create_bucket(Bucket="srppo")
        repo = tmp_path / "repo"
        files = make_data_repo(repo, "s3://srppo/dvc", n_small=60, n_big=2)
        dvc(["remote", "modify", "r", "endpointurl", endpoint], repo)
        # Kill only while objects are still missing (after the last upload dvc runs on a while: its index), one
        # transfer at a time (-j 1) so that that state lasts longer than one listing of the bucket
        kill_when(["push", "-j", "1"], repo, lambda: 10 <= s3_count(endpoint) < len(files))
        stored = assert_s3_objects_whole(endpoint)
        assert 0 < len(stored) < len(files)
        assert {k: v for k, v in status_cloud(repo).items() if k != "data/blob"} == dict.fromkeys(
            missing(files, stored), "new")
        dvc(["push", "-q"], repo)
        assert status_cloud(repo) == {}
        assert assert_s3_objects_whole(endpoint) >= set(files.values())

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        run(["git", "config", "user.email", "ci@example.com"], clone)
        dvc(["remote", "modify", "--local", "r", "endpointurl", endpoint], clone)
        cache = clone / ".dvc" / "cache"
        kill_when(["pull", "-j", "1"], clone, lambda: cache.exists() and 10 <= len(objects(cache)) < len(files))
        assert verify_store(cache / "files/md5", manifests=False, stale_after=0).corrupt == []
        assert 0 < len(missing(files, {p.parent.name + p.name for p in objects(cache)})) < len(files)
        dvc(["pull", "-q"], clone)
        assert {p: md5(clone / p) for p in files} == files
        assert verify_store(cache / "files/md5", manifests=False).corrupt == []
