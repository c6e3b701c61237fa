"""Prefect flow: every DVC stage as a job, in graph order; DVC's cache decides what executes.

A stage job needs nothing but a clone of the repository and the DVC remote: it pulls exactly the
stage's inputs, lets `dvc repro --single-item` run the stage or skip it, and pushes the outputs.
After each stage the content hashes of `dvc.lock`, the params that produced them and the git commit
go to `lineage.json` and to Prefect artifacts; at the end the run's params are saved as a DVC
experiment so the result can be reproduced (`dvc exp apply NAME && dvc pull && dvc repro`).

    pip install -e ".[orchestration]"
    python -m flows.pipeline --preset smoke                # Prefect's ephemeral API, no server needed
    python -m flows.pipeline --set ppo.kl_coef=0.5         # override keys of the current params.yaml
    python -m flows.pipeline --stages calibrate rollouts ppo eval --upstream other-clone/lineage.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows import dvcops, lineage
from flows.dvcgraph import Stage, load_graph, merge_lock, pullable_inputs, read_lock
from flows.params import Overrides, as_dict, resolve, unset_nulls
from flows.params import write as write_params
from srppo.config.files import ConfigError, parse_override_items

GPU_LIMIT = "gpu"  # global concurrency limit every stage run holds one slot of
# Only I/O retries: remotes flake, while a failing stage fails the same way twice. DVC is the cache,
# so Prefect's own task caching (and the hashing of task inputs it costs) is off.
IO_RETRIES = {"retries": 3, "retry_delay_seconds": [10, 30, 90], "cache_policy": NO_CACHE}


@task(task_run_name="pull-{stage}", **IO_RETRIES)
def pull_inputs(repo: Path, stage: str, paths: list[str], remote: str | None) -> None:
    dvcops.pull(repo, paths, remote, get_run_logger().info)


# The task run's state name tells, in the UI's task list, whether DVC computed the stage.
STATE_NAMES = {"ran": "Completed", "restored": "Restored", "skipped": "Skipped"}
STATE_MESSAGES = {"ran": "computed", "restored": "outputs restored from DVC's run cache",
                  "skipped": "unchanged: DVC skipped it"}


@task(task_run_name="stage-{stage}", tags=[GPU_LIMIT], cache_policy=NO_CACHE)
def run_stage(repo: Path, stage: str) -> State:
    """'ran', 'restored' or 'skipped' as a Completed state of that name. Holds a `gpu` slot only while
    DVC decides and the stage computes."""
    log = get_run_logger()
    asked = time.perf_counter()
    # A training stage outlives a lease renewal hiccup; losing the slot record must not kill it.
    with concurrency(GPU_LIMIT, occupy=1, raise_on_lease_renewal_failure=False):
        start = time.perf_counter()
        status = dvcops.repro(repo, stage, log.info)
    log.info(f"stage {stage}: {status} in {time.perf_counter() - start:.1f}s "
             f"(waited {start - asked:.1f}s for a gpu slot)")
    return Completed(name=STATE_NAMES[status], message=STATE_MESSAGES[status], data=status)


@task(task_run_name="push-{stage}", **IO_RETRIES)
def push_outputs(repo: Path, stage: str, remote: str | None) -> None:
    dvcops.push(repo, stage, remote, get_run_logger().info)


def _lineage(repo: Path, graph: dict[str, Stage], statuses: dict[str, str], run: dict) -> dict:
    record = lineage.build(repo, graph, statuses, run)
    record["dvc_lock"] = read_lock(repo)  # what another clone adopts to continue from here (--upstream)
    return record


def publish_lineage(repo: Path, graph: dict[str, Stage], statuses: dict[str, str], run: dict) -> dict:
    """lineage.json and the artifacts, from the flow itself: a few file reads, not worth a task run."""
    record = _lineage(repo, graph, statuses, run)
    lineage.write(repo, record)
    lineage.publish(record)
    return record


def get_or_create(read: Callable[[], object], create: Callable[[], object]) -> None:
    """Create a Prefect server object unless `read` finds it; one a concurrent run created first is fine."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        read()
    except ObjectNotFound:
        try:
            create()
        except ObjectAlreadyExists:
            pass


def ensure_gpu_limit(slots: int = 1) -> None:
    """Create the `gpu` global concurrency limit if the server lacks it (an existing one is left as set)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        get_or_create(lambda: client.read_global_concurrency_limit_by_name(GPU_LIMIT),
                      lambda: client.create_global_concurrency_limit(
                          GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots)))


def select(graph: dict[str, Stage], stages: list[str] | None) -> list[str]:
    unknown = sorted(set(stages or []) - set(graph))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; dvc.yaml has {list(graph)}")
    return [s for s in graph if not stages or s in stages]


def _outputs_present(repo: Path, stage: Stage) -> bool:
    return all((repo / p).exists() for p in stage.outs if p not in stage.uncached)


def _recorded(graph: dict[str, Stage]) -> list[str]:
    """What the experiment commit holds besides tracked files: params, lock, lineage, git-kept outputs."""
    kept = [p for stage in graph.values() for p in sorted(stage.uncached)]
    ignores = sorted({str(Path(p).parent / ".gitignore") for stage in graph.values() for p in stage.outs})
    return ["params.yaml", "dvc.lock", lineage.FILE, *kept, *ignores]


@flow(name="srppo-pipeline", log_prints=True)
def pipeline(
    preset: str | None = None,
    overrides: Overrides = None,  # no `| None`: the form's schema then has no null branch (flows/params.py)
    stages: list[str] | None = None,
    upstream: dict[str, dict] | None = None,
    remote: str | None = None,
    record: bool = True,
    verify_cache: bool = True,
    repo: str = ".",
) -> dict:
    """Run the srppo stages in graph order, each as pull → stage → push, publishing lineage after each.

    Args:
        preset: 'default', a preset from configs/ ('smoke', 'paper-mistral7b') or a YAML path; empty keeps params.yaml.
        overrides: params keys laid over the preset, e.g. {"ppo": {"kl_coef": 0.5}}; validated by srppo.config.files.
            A key left empty (null) is not set.
        stages: run only these (in graph order); empty runs all.
        upstream: dvc.lock entries produced on another clone (its lineage.json "dvc_lock") to continue from.
        remote: DVC remote name; empty uses the repository's default remote (none: no pull/push).
        record: save the run's params, dvc.lock and lineage as a DVC experiment named after the flow run.
        verify_cache: before each stage, hash the DVC cache objects of its inputs against their names (each once
            per run: about a second per GB) and stop on a corrupt one, which DVC would check out as it is.
        repo: the clone to work in.
    """
    root = Path(repo).resolve()
    graph = load_graph(root)
    chosen = select(graph, stages)
    run, use_remote = _prepare(root, graph, preset, as_dict(overrides), upstream, remote, record)
    graph = load_graph(root)  # as regenerated for these params
    statuses: dict[str, str] = {}
    try:
        for name in chosen:
            inputs = pullable_inputs(graph, name)
            if verify_cache and inputs:  # before a pull, which drops a corrupt object and calls it missing
                dvcops.verify_cached(root, inputs, read_lock(root), print)
            if use_remote and inputs:
                pull_inputs(root, name, inputs, remote)
                if verify_cache:  # what the pull brought (each object is hashed once per run)
                    dvcops.verify_cached(root, inputs, read_lock(root), print)
            statuses[name] = run_stage(root, name).result()
            if use_remote and _outputs_present(root, graph[name]):
                push_outputs(root, name, remote)
            lineage.write(root, _lineage(root, graph, statuses, run))  # a file: what is done so far, on disk
        if record and run["git_commit"]:
            run["experiment"] = f"srppo-{run['flow_run']}"
            run["experiment_rev"] = dvcops.save_experiment(root, run["experiment"], _recorded(graph), print)
        elif record:
            print("no git commit to build on: the run's params are in lineage.json only, not in a DVC experiment")
    finally:  # once per run, also a failed one: the run page shows two artifacts, not two per stage
        result = publish_lineage(root, graph, statuses, run)
    print(f"stages: {json.dumps(statuses)}")
    return result


def _prepare(root: Path, graph: dict[str, Stage], preset: str | None, over: dict, upstream: dict | None,
             remote: str | None, record: bool) -> tuple[dict, bool]:
    """Everything before the first stage: the preconditions, params, adopted lock entries, the gpu limit.

    Returns the run record and whether a DVC remote is in use. Every check that can fail runs before
    anything is written, so a refused run costs seconds and changes nothing.
    """
    params = resolve(root, preset, over)  # a bad key fails here, naming it, before any stage runs
    commit, dirty = dvcops.git_commit(root)
    if record and commit:
        dvcops.check_git_identity(root)  # the experiment commit needs one: fail now, not after the stages
    use_remote = dvcops.has_remote(root, remote)
    if use_remote:
        print(f"DVC remote: {dvcops.check_remote(root, remote)}")
    else:
        print("no DVC remote configured: outputs stay in this clone's cache (see docs/orchestration.md)")
    if write_params(root, params, preset, over):
        print(f"params.yaml written from preset={preset or 'params.yaml'} with overrides {json.dumps(over)}")
        # the local files these params name are dependencies of the stages that read them
        dvcops.sh([sys.executable, "tools/dvc_pipelines.py"], root, print)
    if upstream:  # results computed elsewhere: DVC skips the stages they cover, pulling only inputs
        merge_lock(root, {name: entry for name, entry in upstream.items() if name in graph})
    ensure_gpu_limit()
    return ({"flow_run": flow_run.name, "flow_run_id": flow_run.id, "git_commit": commit, "git_dirty": dirty,
             "preset": preset, "overrides": over, "experiment": None}, use_remote)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the srppo DVC stages as Prefect tasks.")
    ap.add_argument("--preset", help="default | smoke | paper-mistral7b | path.yaml (omit: keep params.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key, e.g. ppo.kl_coef=0.5 (repeatable; VALUE is YAML)")
    ap.add_argument("--stages", nargs="+", help="run only these stages (in graph order)")
    ap.add_argument("--upstream", type=Path, help="another clone's lineage.json to continue from")
    ap.add_argument("--remote", help="DVC remote name (default: the repository's default remote)")
    ap.add_argument("--no-record", dest="record", action="store_false", help="do not save a DVC experiment")
    ap.add_argument("--no-verify-cache", dest="verify_cache", action="store_false",
                    help="do not hash the cache objects of each stage's inputs before it runs")
    ap.add_argument("--repo", default=".")
    a = ap.parse_args(argv)
    upstream = json.loads(a.upstream.read_text())["dvc_lock"] if a.upstream else None
    try:
        overrides = unset_nulls(parse_override_items(a.overrides), "--set")
    except ConfigError as err:
        ap.error(str(err))
    pipeline(preset=a.preset, overrides=overrides, stages=a.stages, upstream=upstream,
             remote=a.remote, record=a.record, verify_cache=a.verify_cache, repo=a.repo)


if __name__ == "__main__":
    main()
