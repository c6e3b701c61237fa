"""Lineage: which inputs, params and code produced each output, from `dvc.lock` and git.

Written as `lineage.json` next to `dvc.lock` and published as Prefect artifacts under stable keys, so
"which demonstration set and which SFT checkpoint produced this aligned model?" has one answer in
the UI (Artifacts → srppo-lineage-graph) and one from a shell:

    python -m flows.lineage data/ppo          # trace an output back to its sources
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from flows.dvcgraph import Stage, hashes, read_lock

TABLE_KEY, GRAPH_KEY = "srppo-lineage", "srppo-lineage-graph"
FILE = "lineage.json"

# The method's chain, named by stage and by what the stage declares in dvc.yaml (never by path):
# (role, stage, "outs" | "metrics" for the stage's first such output, or "input:<stage>" for its input from there).
CHAIN = [
    ("demonstration set", "sft", "input:prepare"),
    ("SFT checkpoint", "sft", "outs"),
    ("calibration", "calibrate", "outs"),
    ("rollouts", "rollouts", "outs"),
    ("aligned model", "ppo", "outs"),
    ("eval metrics", "eval", "metrics"),
]


def _digest(obj) -> str:
    return hashlib.md5(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def build(repo: Path, graph: dict[str, Stage], statuses: dict[str, str], run: dict) -> dict:
    """The lineage record of every stage that `dvc.lock` knows, plus the headline chain."""
    lock = read_lock(repo)
    stages = {}
    for name, stage in graph.items():
        if name in lock:
            entry = lock[name]
            stages[name] = {
                "status": statuses.get(name, "not in this run"),
                "outs": hashes(entry, "outs"),
                "deps": hashes(entry, "deps"),
                "inputs_from": stage.inputs,
                "params": entry.get("params", {}).get("params.yaml", {}),
            }
    return {"run": run, "chain": _chain(graph, stages), "stale": _stale(stages), "stages": stages}


def _stale(stages: dict[str, dict]) -> list[dict]:
    """Inputs a stage consumed in a version its producer has since replaced (after a partial run).

    Only whole outputs compare (a file inside an output directory has no hash of its own in the lock).
    """
    found = []
    for name, s in stages.items():
        for dep, producer in s["inputs_from"].items():
            current = stages.get(producer, {}).get("outs", {}).get(dep)
            if current and current != s["deps"].get(dep):
                found.append({"stage": name, "input": dep, "consumed": s["deps"].get(dep), "current": current})
    return found


def _chain(graph: dict[str, Stage], stages: dict[str, dict]) -> list[dict]:
    rows = []
    for role, name, pick in CHAIN:
        if name not in stages:
            continue
        if pick.startswith("input:"):
            producer = pick.split(":", 1)[1]
            paths = [p for p, up in graph[name].inputs.items() if up == producer]
            found = {p: stages[name]["deps"].get(p) for p in paths}
        else:
            paths = [p for p, kind in graph[name].outs.items() if kind == pick][:1]
            found = {p: stages[name]["outs"].get(p) for p in paths}
        rows += [{"role": role, "stage": name, "path": p, "md5": h} for p, h in found.items()]
    return rows


def table(record: dict) -> list[dict]:
    """One row per output: what the Prefect table artifact shows."""
    commit = (record["run"].get("git_commit") or "none")[:10]
    roles = {(r["stage"], r["path"]): r["role"] for r in record["chain"]}
    return [
        {"stage": name, "status": s["status"], "role": roles.get((name, path), ""), "path": path, "md5": md5,
         "params": _digest(s["params"]), "git_commit": commit}
        for name, s in record["stages"].items() for path, md5 in s["outs"].items()
    ]


def markdown(record: dict) -> str:
    run = record["run"]
    lines = [
        "# srppo lineage",
        (f"git commit `{run.get('git_commit') or 'none'}`{' (uncommitted changes)' if run.get('git_dirty') else ''}"
         f" · flow run `{run.get('flow_run') or '-'}` · experiment `{run.get('experiment') or '-'}`"),
        f"preset `{run.get('preset') or 'params.yaml'}` · overrides `{json.dumps(run.get('overrides') or {})}`",
        "", "## Chain", "", "| role | stage | path | md5 |", "|---|---|---|---|",
        *(f"| {r['role']} | {r['stage']} | `{r['path']}` | `{r['md5']}` |" for r in record["chain"]),
        *((f"\n**stale**: `{x['stage']}` was made from `{x['input']}` `{x['consumed']}`; "
           f"the current one is `{x['current']}` (rerun `{x['stage']}`).") for x in record.get("stale", [])),
        "", "## Graph (inputs ← producer, outputs, params)", "",
    ]
    for name, s in record["stages"].items():
        ins = ", ".join(f"`{p}` `{s['deps'].get(p, '?')[:8]}` ← {up}" for p, up in s["inputs_from"].items())
        outs = ", ".join(f"`{p}` `{h[:8]}`" for p, h in s["outs"].items())
        params = "; ".join(f"{k}: {json.dumps(v, separators=(',', ':'))}" for k, v in s["params"].items())
        lines.append(f"- **{name}** ({s['status']}): {ins or 'no data inputs'} ⇒ {outs}  \n  params {params}")
    return "\n".join(lines)


def write(repo: Path, record: dict) -> Path:
    path = repo / FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def publish(record: dict) -> None:
    """Prefect artifacts under stable keys: each run adds a version; the UI shows the latest."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(key=TABLE_KEY, table=table(record), description="srppo outputs with content hashes")
    create_markdown_artifact(key=GRAPH_KEY, markdown=markdown(record), description="srppo lineage graph")


def trace(record: dict, path: str) -> list[str]:
    """The output `path` and, recursively, every input that produced it, with hashes and stages."""
    for name, s in record["stages"].items():
        if path in s["outs"]:
            return [f"{path}  md5 {s['outs'][path]}  ← stage {name} (params {_digest(s['params'])})",
                    *_inputs(record, name, "  ", {name})]
    return [f"{path}: not an output recorded in this lineage"]


def _inputs(record: dict, name: str, indent: str, seen: set[str]) -> list[str]:
    # Each producer's own inputs are listed once, where it first appears (`data/base` feeds nearly all).
    stage, lines = record["stages"][name], []
    for dep, producer in stage["inputs_from"].items():
        consumed = stage["deps"].get(dep)
        lines.append(f"{indent}{dep}  md5 {consumed}  ← stage {producer}")
        current = record["stages"].get(producer, {}).get("outs", {}).get(dep)
        if current and current != consumed:  # the producer's record is about a newer version: stop here
            lines.append(f"{indent}  (stage {producer} has since produced md5 {current})")
        elif producer in record["stages"] and producer not in seen:
            seen.add(producer)
            lines += _inputs(record, producer, indent + "  ", seen)
    return lines


def main(argv: list[str]) -> int:
    record = json.loads(Path(FILE).read_text())
    if not argv:
        print("\n".join(f"{r['role']:>17}: {r['path']}  md5 {r['md5']}" for r in record["chain"]))
        return 0
    print("\n".join(trace(record, argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
