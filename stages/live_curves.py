"""Not a stage: the DVCLive logger that the training stages (sft, ppo, spin, reward_model) share.

srppo/ never imports DVC or DVCLive: its training loops hand each step's row to a callback, and the
stage passes `log` from here. Each row is written when its step ends, one TSV per metric under
LIVE_DIR/plots/metrics/ (PPO's critic warm-up under `warmup/`), so `dvc plots show` draws a stage that
is still running. DVCLive neither edits dvc.yaml nor records experiments: LIVE_DIR is a declared output of
the stage, and dvc.yaml's top-level `plots:` says how its curves are drawn.

A failed run keeps the previous run's curves, which dvc.yaml keeps in place (`persist`) rather than deleting
them before the run: DVCLive opens (and clears LIVE_DIR) at the first row only, after the previous curves
were set aside beside it, and they come back if the run then fails (a diverged model, a crash). So the
stage's results still match dvc.lock, and restoring the recorded params reruns nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Log = Callable[..., None]  # log(step, row, prefix="")


@contextmanager
def live_curves(live_dir: str, enabled: bool = True) -> Iterator[Log]:
    """Yield `log(step, row, prefix="")`, which writes the numeric fields of `row` as step `step`.

    `enabled=False` (ranks other than the first) yields a `log` that does nothing.
    """
    if not enabled:
        yield lambda step, row, prefix="": None
        return
    live = None
    path = Path(live_dir)
    previous = path.with_name(f".{path.name}.previous")  # the last good run's curves while this one runs

    def log(step: int, row: dict, prefix: str = "") -> None:
        nonlocal live
        if live is None:  # DVCLive clears LIVE_DIR when it opens: not before a first step has trained
            if path.exists() and not previous.exists():  # one left by a killed run is the last good one
                path.rename(previous)
            live = _open(live_dir)
        live.step = step
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                live.log_metric(prefix + key, value)
        live.next_step()  # LIVE_DIR/metrics.json (DVCLive's summary) too, not only at the end

    try:
        yield log
    except BaseException:
        if live is not None:
            live.end()
            if previous.exists():  # the failed run's curves give way to the last good run's
                shutil.rmtree(path, ignore_errors=True)
                previous.rename(path)
        raise
    if live is not None:
        live.end()
    shutil.rmtree(previous, ignore_errors=True)


def _open(live_dir: str):
    """DVCLive writing into `live_dir` and declaring nothing: no dvc.yaml, no experiment, no report."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    class NoGitLive(Live):
        def _init_dvc(self):  # skips DVCLive's git and DVC lookup (experiment name, Studio), unused here
            self._dvc_file = "dvc.yaml"  # set by the method it replaces, read by `Live.dvc_file`

    options = {"dvcyaml": None, "save_dvc_exp": False, "report": None}
    try:
        return Live(live_dir, **options)
    except SCMError:  # git without a commit yet, where `dvc repro` runs but DVCLive stops (treeverse/dvclive#522)
        return NoGitLive(live_dir, **options)
