"""What every pipeline step shares: validated params, runtime setup, timing, progress, metrics and reports."""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import srppo
from srppo.config.files import ConfigError, load_params
from srppo.config.params import Params
from srppo.io import write_json

OVERRIDES_ENV = "SRPPO_SET"
PARAMS_ENV = "SRPPO_PARAMS"  # another params file than params.yaml: the comparison grid's comparison/params.yaml

_read: dict = {}  # what `load` read: the file, its bytes' sha256, the overrides and the validated params


class ParamsChangedError(RuntimeError):
    """params.yaml changed while the stage ran: its outputs were computed with the values it read at start."""


def load(params_path: str | Path = "params.yaml") -> Params:
    """Validate the whole params file up front: a typo anywhere fails before any work starts.

    $SRPPO_PARAMS names another file than `params_path` (the comparison grid's stage commands set it to
    comparison/params.yaml), and $SRPPO_SET ("runtime.seed=1 prepare.overlap=medium") is laid over the file:
    the grid's stage commands set it per cell. The params read are kept: `write_results` records them and fails if the
    file changed meanwhile. The process also ends with the one that started it (`die_with_parent`).
    """
    die_with_parent()
    params_path = os.environ.get(PARAMS_ENV) or params_path
    overrides = os.environ.get(OVERRIDES_ENV, "")
    try:
        data = _file_bytes(Path(params_path))
        params = load_params(params_path, overrides)
        if overrides.strip():
            log("params", f"{params_path} with {OVERRIDES_ENV}={overrides}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    _read.update(path=Path(params_path), sha256=hashlib.sha256(data).hexdigest(), overrides=overrides, params=params)
    return params


def params_changed() -> list[str]:
    """`section.key: old -> new` for each value that differs between the params `load` read and the file now
    (empty when nothing changed, or when nothing was loaded)."""
    if not _read or hashlib.sha256(_file_bytes(_read["path"])).hexdigest() == _read["sha256"]:
        return []
    try:
        now = load_params(_read["path"], _read["overrides"]).model_dump(mode="json")
    except ConfigError as err:
        return [f"the file no longer validates ({err})"]
    return list(_differences(_read["params"].model_dump(mode="json"), now))


def _file_bytes(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def _differences(old, new, prefix: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            yield from _differences(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def check_params_unchanged(stage: str) -> None:
    """ParamsChangedError if params.yaml changed since `load`: DVC records the params it finds when a stage
    ends, so outputs computed with the old values would be recorded under the new ones."""
    changed = params_changed()
    if changed:
        shown = "; ".join(changed[:5]) + ("; ..." if len(changed) > 5 else "")
        raise ParamsChangedError(
            f"{stage}: {_read['path']} changed while the stage ran ({shown}). Its outputs were computed with the "
            f"values read at its start, so they are not recorded as this run's: run it again (a checkpoint, if "
            f"any, resumes it where its params still match).")


def die_with_parent() -> None:
    """End this process (SIGTERM) when the one that started it exits: a killed `dvc repro` or Prefect worker
    must not leave its stage running as an orphan that a rerun would then start a second copy beside. Linux
    only (prctl PR_SET_PDEATHSIG); a no-op elsewhere."""
    if not sys.platform.startswith("linux") or _read.get("watching"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    _read["watching"] = True
    # the parent died before the request was in place: during this call, or since the package's first import
    # (srppo.LAUNCHED, tens of milliseconds after the process started)
    if os.getppid() != parent or srppo.LAUNCHED[0] == os.getpid() and srppo.LAUNCHED[1] != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def log(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Wall time per named phase, reported in the stage's metrics."""

    def __init__(self, stage: str):
        self.stage, self.phases, self._t0 = stage, {}, time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        log(self.stage, f"{name} ...")
        t = time.perf_counter()
        yield
        self.phases[name] = round(time.perf_counter() - t, 2)
        log(self.stage, f"{name} done in {self.phases[name]:.1f}s")

    def report(self) -> dict:
        return {"seconds": {**self.phases, "total": round(time.perf_counter() - self._t0, 2)}}


def write_results(metrics_path: str | Path, report_path: str | Path, summary: dict, report: dict,
                  timer: Timer) -> None:
    """A stage's two result files: `summary`, the few numbers a person compares across runs, to
    `metrics_path`; the whole `report` (breakdowns, paths, distributions), the timings and the params read
    (file, sha256 of its bytes, overrides) to `report_path`. First, ParamsChangedError if the params file
    changed since the stage read it (`check_params_unchanged`)."""
    check_params_unchanged(timer.stage)
    read = {"params_read": {"file": str(_read["path"]), "sha256": _read["sha256"], "overrides": _read["overrides"]}
            } if _read else {}
    write_json(metrics_path, summary)
    write_json(report_path, {**report, **timer.report(), **read})


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on stderr, which DVC streams through; redrawn at most every 2 s to keep logs short."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=2.0,
                disable=os.environ.get("RANK", "0") != "0")  # one bar per stage, not per process


def training_config(runtime, micro_batch: int, grad_accum: int, max_grad_norm: float, dtype, lr: float) -> dict | None:
    """The DeepSpeed config for a training stage, or None for plain torch."""
    if not runtime.deepspeed_config:
        return None
    from srppo.runtime.distributed import deepspeed_config

    return deepspeed_config(runtime.deepspeed_config, micro_batch, grad_accum, max_grad_norm, dtype, lr)


def beside_output(out_dir: str | Path, kind: str) -> Path:
    """`data/<stage>` -> `data/<kind>/<stage>`: where a stage keeps what is not one of its outputs
    (`checkpoints`, a NaN `debug` dump), derived from the output path the stage was given, so every path
    still comes from the stage's arguments. Beside the output, never inside: a pipeline runner may delete
    declared outputs before a run, and an output is written whole or not at all."""
    out = Path(out_dir)
    return out.parent / kind / out.name
