"""Orchestration overhead: what the Prefect flow and DVC's bookkeeping add to the stages' own time.

    python bench/orchestration_overhead.py                    # smoke preset, embedded default model
    python bench/orchestration_overhead.py --default-seconds 1000   # also project onto a default run

In a fresh copy of the project (git + DVC, a local-directory remote) it runs `python -m flows.pipeline
--preset smoke` end to end (ephemeral Prefect API, pull/push, lineage, DVC experiment) and then once
more with nothing to do. While the flow runs, the process tree is watched: each `python stages/X.py`
process is a stage's raw work (interpreter start included), the same command a person would type.
Overhead = flow wall time - the stage processes' wall time, both from the same run, so a busy machine
slows both sides instead of skewing their difference.

Smoke runs the embedded default's own model, so DVC's hashing and caching of the model directories
costs what it costs on the default, and the overhead in seconds carries over: `--default-seconds` (a
default run's raw stage time, docs/results/embedded-default.md) turns it into the default's percentage.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("srppo", "stages", "configs", "flows", "dvc.yaml", "params.yaml")
STAGE_SCRIPT = re.compile(r"^stages/(\w+)\.py$")


def env_for(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               PREFECT_HOME=str(repo.parent / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def sh(cmd: list[str], repo: Path) -> str:
    res = subprocess.run(cmd, cwd=repo, env=env_for(repo), capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout + res.stderr


def make_copy(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for item in PROJECT:
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / item)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.com"],
                ["git", "config", "user.name", "bench"], ["dvc", "init", "-q"],
                ["dvc", "remote", "add", "-d", "local", str(dst.parent / "remote")],
                ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        sh(cmd, dst)
    return dst


def _watch(proc: subprocess.Popen, spans: dict[int, list]) -> None:
    """Record [stage, start, last seen] for every `python stages/X.py` below `proc` (0.1 s resolution)."""
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        now = time.time()
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                match = next(filter(None, map(STAGE_SCRIPT.match, child.cmdline())), None)
                if match:
                    spans.setdefault(child.pid, [match.group(1), child.create_time(), now])[2] = now
            except psutil.Error:
                pass
        time.sleep(0.1)


def flow_run(repo: Path, preset: str) -> tuple[float, dict[str, float], str]:
    """(wall seconds, {stage: its process's wall seconds}, the flow's stage statuses)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--preset", preset], cwd=repo,
                            env=env_for(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spans: dict[int, list] = {}
    watcher = threading.Thread(target=_watch, args=(proc, spans), daemon=True)
    watcher.start()
    out = proc.communicate()[0]
    seconds = time.time() - start
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"flow failed:\n{out[-4000:]}")
    per_stage: dict[str, float] = {}
    for stage, begin, end in spans.values():
        per_stage[stage] = per_stage.get(stage, 0.0) + end - begin
    statuses = re.findall(r"stages: (\{.*\})", out)
    return seconds, per_stage, statuses[-1] if statuses else "?"


def report(flow_s: float, per_stage: dict, again_s: float, again_status: str, default_s: float | None) -> str:
    raw_s = sum(per_stage.values())
    over = flow_s - raw_s
    load = os.getloadavg()
    lines = [(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"load average after the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"), "",
             "| stage | its own process (s) |", "|---|---|"]
    lines += [f"| {s} | {t:.1f} |" for s, t in per_stage.items()]
    lines += [f"| **stages** | **{raw_s:.1f}** |", f"| **flow, end to end** | **{flow_s:.1f}** |", "",
              f"Overhead on smoke: {over:.1f} s = {100 * over / raw_s:.1f} % of the stages' own time.",
              f"Second flow run (nothing to do): {again_s:.1f} s, stages {again_status}."]
    if default_s:
        lines.append(f"Projected on the embedded default ({default_s:.0f} s of stage time): "
                     f"{100 * over / default_s:.1f} %.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--default-seconds", type=float, help="raw stage time of a full embedded-default run")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="srppo-bench-") as tmp:
        repo = make_copy(Path(tmp) / "repo")
        flow_s, per_stage, _ = flow_run(repo, a.preset)
        again_s, _, again_status = flow_run(repo, a.preset)
    print(report(flow_s, per_stage, again_s, again_status, a.default_seconds))


if __name__ == "__main__":
    main()
