"""Prefect flow: run each DVC stage as its own task, in graph order.

DVC stays the source of truth for the graph and the cache: each task calls `dvc repro --single-item
STAGE`, so an unchanged stage is skipped by DVC in seconds. Prefect runs, retries and records.

    pip install -e ".[orchestration]"
    python -m flows.pipeline            # runs against Prefect's ephemeral API
"""

from __future__ import annotations

import subprocess
import sys

from prefect import flow, task

STAGES = ["base", "prepare", "sft", "calibrate", "rollouts", "ppo", "eval"]


@task(tags=["gpu"], task_run_name="stage-{stage}")
def run_stage(stage: str) -> str:
    res = subprocess.run(["dvc", "repro", "--single-item", stage], capture_output=True, text=True)
    print(res.stdout[-4000:])
    if res.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{res.stderr[-4000:]}")
    return "ran" if f"Running stage '{stage}'" in res.stdout else "cached"


@flow(name="srppo-pipeline", log_prints=True)
def pipeline(stages: list[str] = STAGES) -> dict[str, str]:
    return {stage: run_stage(stage) for stage in stages}


if __name__ == "__main__":
    print(pipeline(sys.argv[1:] or STAGES))
