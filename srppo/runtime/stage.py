"""What every pipeline step shares: validated params, runtime setup, timing, progress, metrics and reports."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from srppo.config.files import ConfigError, load_params
from srppo.config.params import Params
from srppo.io import write_json

OVERRIDES_ENV = "SRPPO_SET"


def load(params_path: str | Path = "params.yaml") -> Params:
    """Validate the whole params file up front: a typo anywhere fails before any work starts.

    $SRPPO_SET ("runtime.seed=1 prepare.overlap=medium") is laid over the file: the comparison grid's
    stage commands set it per cell.
    """
    overrides = os.environ.get(OVERRIDES_ENV, "")
    try:
        params = load_params(params_path, overrides)
        if overrides.strip():
            log("params", f"{params_path} with {OVERRIDES_ENV}={overrides}")
        return params
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


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
    `metrics_path`; the whole `report` (breakdowns, paths, distributions) and the timings to `report_path`."""
    write_json(metrics_path, summary)
    write_json(report_path, {**report, **timer.report()})


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


def checkpoint_interval(runtime, every: int, stage: str) -> int:
    # ZeRO shards weights and optimizer states across ranks: our single-file checkpoints cannot hold them
    if runtime.deepspeed_config and every:
        log(stage, "checkpoint_every is ignored under DeepSpeed: resume needs unsharded states")
        return 0
    return every
