"""Small file helpers: atomic writes so a crash never leaves a half-written artifact.

Every writer goes through a temporary sibling renamed into place, so the target holds either its previous
content or the complete new one. A write that fails (disk full, quota, permissions) raises an `OSError`
naming the *target*, not the temporary file, with the errno kept, and leaves no temporary behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, before any thread could create files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files and mkdtemp 0700 directories; outputs get the mode `open(path, "w")` and
# `mkdir` would have given them (group-readable under the usual umask: a shared cache's other users read them).
_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _write_failed(path: Path, err: OSError) -> OSError:
    """The error a failed output write raises: the target named, the errno and its reason kept.

    A file written inside an `atomic_dir` fails once: the directory is the output named, with the root
    reason (not the message of the inner temporary file's error).
    """
    reason = getattr(err, "reason", None) or err.strerror or str(err)
    out = OSError(err.errno, f"writing {path} failed: {reason}; nothing was written to {path}: it is as this run "
                             f"found it (absent if it was absent)")
    out.reason = reason
    return out


def as_os_error(err: BaseException) -> OSError | None:
    """`err` as an OSError when it is an I/O failure in another library's clothes: safetensors' writer reports a
    full disk as `SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)`
    (older releases: `IoError(Os { code: 28, ... })`), naming no file. None for anything else."""
    if isinstance(err, OSError):
        return err
    text = str(err)
    found = re.search(r"\(os error (\d+)\)|IoError\(Os \{ code: (\d+)", text)
    if not found:
        return None
    code = int(found.group(1) or found.group(2))
    return OSError(code, os.strerror(code))


@contextmanager
def atomic_file(path: str | Path) -> Iterator[TextIO]:
    """Yield a text file that replaces `path` only if the block completes and the data reached the disk.

    The fsync matters for errors too: with delayed allocation (ext4, XFS) a full disk is often
    reported only when the data is flushed, after every `write` succeeded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _write_failed(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling directory; it replaces `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write (SIGKILL, OOM)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        io_error = as_os_error(err)  # disk full, quota, permissions: say which output could not be written
        if io_error is None:
            raise
        raise _write_failed(path, io_error) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)

