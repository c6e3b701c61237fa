"""Verify, and repair, a DVC object store on a local path: the cache or a local-directory remote.

DVC writes each object under a temporary name in its final directory and renames it into place, so a
killed `dvc push` or `dvc pull` never leaves a partial object under its content-addressed name: rerunning
the command completes the transfer. What the kill does leave is the temporary file it was writing
(`files/md5/ab/.<random>.tmp`), which no later push or pull removes.

A store can also hold a corrupt object (a disk fault, a copy made outside DVC), and DVC does not reread
objects: `dvc status -c` and `dvc push` take a `.dir` manifest present on a remote as proof that every
file it lists is there too (DVC's remote index), so a lost or corrupt file inside a directory output is
never pushed again. `repair` removes corrupt objects, the manifests that list a missing or corrupt
object and stale temporary files; the next `dvc push` (or `dvc pull`) then transfers them anew.

    python -m tools.storecheck                   # the default remote and the cache of this repository
    python -m tools.storecheck --remote shared --repair
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20


@dataclass
class StoreReport:
    root: Path  # the store's `files/md5` directory
    objects: int = 0
    corrupt: list[Path] = field(default_factory=list)  # content does not hash to the object's name
    incomplete: list[Path] = field(default_factory=list)  # .dir manifests listing a missing or corrupt object
    temp: list[Path] = field(default_factory=list)  # temporary files of killed transfers

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.incomplete or self.temp)

    def summary(self) -> str:
        return (f"{self.root}: {self.objects} objects, {len(self.corrupt)} corrupt, "
                f"{len(self.incomplete)} incomplete directory manifests, {len(self.temp)} stale temporary files")


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:  # a running transfer renamed it into place meanwhile
        return -1.0


def _oid(path: Path) -> str:
    # files/md5/ab/cdef....dir -> abcdef... (DVC hashes a manifest's bytes like any file's)
    return path.parent.name + path.name.removesuffix(".dir")


def verify_store(root: str | Path, manifests: bool = True, stale_after: float = 3600.0) -> StoreReport:
    """Hash every object of the store at `root` (its `files/md5` directory) against its name.

    `manifests`: also require every file a `.dir` manifest lists to be present and intact. True for a
    remote, where DVC trusts a manifest for its files; False for a cache, where a pull killed after
    fetching a manifest but before its files is normal and the next pull completes it.
    `stale_after`: seconds after which a temporary file is taken for a killed transfer's; a younger
    one may belong to a push or pull still running.
    """
    report = StoreReport(Path(root))
    valid, dirs = set(), []
    for path in sorted(report.root.glob("??/*")):
        if path.name.endswith(".tmp"):
            if _age(path) >= stale_after:
                report.temp.append(path)
            continue
        report.objects += 1
        if file_md5(path) != _oid(path):
            report.corrupt.append(path)
            continue
        valid.add(_oid(path))
        if path.suffix == ".dir":
            dirs.append(path)
    if manifests:
        report.incomplete = [d for d in dirs if not {e["md5"] for e in json.loads(d.read_bytes())} <= valid]
    return report


def repair_store(report: StoreReport) -> list[Path]:
    """Delete what `report` found wrong; returns the paths removed. Rerun `dvc push`/`dvc pull` afterwards."""
    removed = []
    for path in [*report.corrupt, *report.incomplete, *report.temp]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _stores(repo: Path, remote: str | None) -> list[tuple[Path, bool]]:
    """(files/md5 directory, whether manifests must be complete) for the repo's remote and its cache."""
    from dvc.config import NoRemoteError
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        cache = (Path(r.cache.local.path), False)
        try:
            odb = r.cloud.get_remote_odb(remote)
        except NoRemoteError:
            return [cache]  # no remote configured: the data lives in this cache only
        if odb.fs.protocol != "local":
            raise SystemExit(f"remote {remote or r.config['core'].get('remote')!r} is {odb.fs.protocol}, not a "
                             "local directory: only local stores are checked here (S3 writes objects whole)")
        return [(Path(odb.path), True), cache]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.storecheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--remote", help="DVC remote name (default: the repository's default remote)")
    ap.add_argument("--repair", action="store_true", help="delete corrupt objects, their manifests, stale temp files")
    ap.add_argument("--stale-after", type=float, default=3600.0, help="seconds before a temp file counts as stale")
    a = ap.parse_args(argv)
    bad = False
    for root, manifests in _stores(a.repo, a.remote):
        report = verify_store(root, manifests, a.stale_after)
        print(report.summary())
        if a.repair and not report.ok:
            print(f"  removed {len(repair_store(report))} paths; rerun `dvc push` (remote) or `dvc pull` (cache)")
        bad |= not report.ok and not a.repair
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
