"""Deployments of the srppo flow, so runs can be triggered from the Prefect UI or API.

    # local: a process work pool running the flow in this checkout
    python -m flows.deploy local
    prefect worker start --pool srppo-local

    # GPU workers: a Docker (or Kubernetes) pool running the project's image on a fresh git clone
    python -m flows.deploy image --pool srppo-gpu --image registry.example.com/srppo:latest \
        --repo-url https://git.example.com/you/srppo.git
    prefect worker start --pool srppo-gpu          # on the GPU host (pip install prefect-docker)

    # the other nodes of a multi-node run (runtime.nnodes > 1), on the checkout the nodes share
    python -m flows.deploy node --repo /shared/srppo --node-rank 1 --pool srppo-node1
    prefect worker start --pool srppo-node1        # on node 1

docs/orchestration.md explains the pools, the `gpu` concurrency limit and the shared DVC remote;
docs/scale-out.md the nodes of a multi-node run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from flows.pipeline import ensure_gpu_limit, get_or_create, pipeline

ENTRYPOINT = "flows/pipeline.py:pipeline"
LOCAL_POOL = "srppo-local"


def ensure_pool(name: str, pool_type: str) -> None:
    with get_client(sync_client=True) as client:
        get_or_create(lambda: client.read_work_pool(name),
                      lambda: client.create_work_pool(WorkPoolCreate(name=name, type=pool_type)))


def deploy_local(repo: Path, name: str = "local", pool: str = LOCAL_POOL) -> UUID:
    """A deployment whose runs execute in `repo` itself, picked up by a process worker on this machine."""
    ensure_pool(pool, "process")
    ensure_gpu_limit()
    flow = pipeline.from_source(source=str(Path(repo).resolve()), entrypoint=ENTRYPOINT)
    return flow.deploy(name=name, work_pool_name=pool, description=_description("this checkout"))


def deploy_node(repo: Path, node_rank: int, pool: str, name: str | None = None) -> UUID:
    """A deployment of the node flow (flows/node.py) for node `node_rank` of a multi-node run, in `repo` (the
    checkout on the file system the nodes share), picked up by a process worker on that node."""
    from flows.node import node

    ensure_pool(pool, "process")
    flow = node.from_source(source=str(Path(repo).resolve()), entrypoint="flows/node.py:node")
    return flow.deploy(name=name or f"node{node_rank}", work_pool_name=pool, parameters={"node_rank": node_rank},
                       description=f"srppo: node {node_rank}'s processes of a multi-node stage (set `stage`), "
                                   f"started with node 0's pipeline run")


def deploy_image(pool: str, image: str, repo_url: str, branch: str | None = None, name: str = "gpu",
                 build: bool = False, job_variables: dict | None = None) -> UUID:
    """A deployment for a Docker/Kubernetes pool: each run clones `repo_url` inside `image`.

    The clone and the DVC remote are all a run needs; the remote's credentials reach the container at run
    time (a mounted file or a Kubernetes secret), never through `job_variables`, which the deployment
    stores. With `build`, the image is built from the project's Dockerfile.
    """
    from prefect.docker import DockerImage
    from prefect.runner.storage import GitRepository

    refuse_secrets(job_variables or {})
    ensure_gpu_limit()
    source = GitRepository(url=repo_url, branch=branch)
    flow = pipeline.from_source(source=source, entrypoint=ENTRYPOINT)
    img = DockerImage(name=image.rsplit(":", 1)[0], tag=image.rsplit(":", 1)[1] if ":" in image else "latest",
                      dockerfile="Dockerfile") if build else image
    return flow.deploy(name=name, work_pool_name=pool, image=img, build=build, push=build,
                       job_variables=job_variables or {}, description=_description(repo_url))


SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def refuse_secrets(job_variables: dict) -> None:
    """Job variables are stored with the deployment (Prefect's database, shown in the UI): no credentials."""
    found = sorted(k for k in job_variables.get("env") or {} if SECRET_NAMES.search(k))
    if found:
        raise ValueError(f"job variables env {found} would store credentials in the deployment, readable in "
                         "Prefect's UI and database; give workers credentials through a mounted file or a "
                         "Kubernetes secret instead (docs/orchestration.md, \"Security defaults\")")


def _description(where: str) -> str:
    return (f"srppo: every DVC stage as a task, in {where}. Set `preset` (default, smoke, paper-mistral7b) "
            "and `overrides` (params keys); the run's params are saved as a DVC experiment named after it.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description="Deploy the srppo flow.")
    sub = ap.add_subparsers(dest="kind", required=True)
    local = sub.add_parser("local", help="process work pool, code from this checkout")
    local.add_argument("--repo", type=Path, default=Path("."))
    local.add_argument("--pool", default=LOCAL_POOL)
    local.add_argument("--name", default="local")
    image = sub.add_parser("image", help="Docker or Kubernetes work pool, code from a git clone")
    image.add_argument("--pool", required=True, help="an existing docker/kubernetes work pool")
    image.add_argument("--image", required=True)
    image.add_argument("--repo-url", required=True)
    image.add_argument("--branch")
    image.add_argument("--name", default="gpu")
    image.add_argument("--build", action="store_true", help="build and push the image from ./Dockerfile")
    image.add_argument("--job-variables", type=json.loads, default=None, help="JSON, e.g. '{\"env\": {...}}'")
    other = sub.add_parser("node", help="process work pool on another node of a multi-node run")
    other.add_argument("--repo", type=Path, default=Path("."))
    other.add_argument("--node-rank", type=int, required=True)
    other.add_argument("--pool", required=True)
    other.add_argument("--name")
    a = ap.parse_args(argv)
    if a.kind == "node":
        deployment_id = deploy_node(a.repo, a.node_rank, a.pool, a.name)
        print(f"deployment {deployment_id}: run it with node 0's pipeline run, e.g. "
              f"`prefect deployment run 'srppo-node/{a.name or f'node{a.node_rank}'}' -p stage=ppo`")
        return
    if a.kind == "local":
        deployment_id = deploy_local(a.repo, a.name, a.pool)
    else:
        deployment_id = deploy_image(a.pool, a.image, a.repo_url, a.branch, a.name, a.build, a.job_variables)
    print(f"deployment {deployment_id}: trigger it from the UI or `prefect deployment run 'srppo-pipeline/{a.name}'`")


if __name__ == "__main__":
    main()
