"""One more node of a multi-node stage (`runtime.nnodes` > 1): its share of the training processes, no more.

    python -m flows.node ppo --node-rank 1 [--repo .]

Node 0 runs the pipeline flow (flows/pipeline.py), which pulls the stage's inputs, runs it, records and pushes
its outputs. Every other node runs this flow at the same time: the stage's own command from `dvc.yaml`, with
`NODE_RANK` set, so that its processes join node 0's at `runtime.rendezvous` as ranks k * num_processes and up.
Nothing here touches DVC: rank 0, on node 0, writes the outputs, and the nodes share the repository's
file system (docs/scale-out.md, "Several nodes").
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import yaml
from prefect import flow, get_run_logger

from srppo.config.files import load_params


@flow(name="srppo-node", log_prints=True)
def node(stage: str, node_rank: int, repo: str = ".") -> int:
    """Run `stage`'s command as node `node_rank` of a multi-node run; its exit status (non-zero raises).

    Args:
        stage: a training stage of dvc.yaml (sft or ppo).
        node_rank: this node's index, 1 .. runtime.nnodes - 1 (node 0 runs the pipeline flow).
        repo: the repository, on the file system the nodes share.
    """
    root = Path(repo).resolve()
    runtime = load_params(root / "params.yaml").runtime
    if runtime.nnodes < 2 or not 0 < node_rank < runtime.nnodes:
        raise ValueError(f"node_rank={node_rank}: {root / 'params.yaml'} has runtime.nnodes={runtime.nnodes}; this "
                         f"flow runs nodes 1 .. nnodes - 1 (node 0 runs the pipeline flow)")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    if stage not in stages:
        raise ValueError(f"{root / 'dvc.yaml'} has no stage {stage!r} (stages: {', '.join(stages)})")
    cmd = stages[stage]["cmd"]
    get_run_logger().info(f"node {node_rank} of {runtime.nnodes}: {cmd}")
    done = subprocess.run(cmd, shell=True, cwd=root, env={**os.environ, "NODE_RANK": str(node_rank)})
    if done.returncode:
        raise RuntimeError(f"stage {stage} on node {node_rank} exited with {done.returncode}")
    return done.returncode


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.node", description=__doc__.splitlines()[0])
    ap.add_argument("stage")
    ap.add_argument("--node-rank", type=int, required=True)
    ap.add_argument("--repo", default=".")
    a = ap.parse_args(argv)
    node(a.stage, a.node_rank, a.repo)


if __name__ == "__main__":
    main()
