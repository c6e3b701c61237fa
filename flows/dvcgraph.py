"""The stage graph as DVC sees it: `dvc.yaml` for structure, `dvc.lock` for content hashes.

Read from the files themselves (plain YAML) so that the flow never restates a path or a stage
order that `dvc.yaml` already holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

OUT_KINDS = ("outs", "metrics", "plots")


@dataclass
class Stage:
    name: str
    deps: list[str]
    outs: dict[str, str] = field(default_factory=dict)  # path -> kind (outs | metrics | plots)
    uncached: set[str] = field(default_factory=set)  # outs kept in git, not in the DVC cache or remote
    inputs: dict[str, str] = field(default_factory=dict)  # data dep path -> stage that writes it


def _paths(entries: list) -> list[str]:
    # dvc.yaml lists a path either bare or as a one-key mapping carrying options ({path: {cache: false}}).
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def _uncached(entries: list) -> set[str]:
    return {next(iter(e)) for e in entries or [] if isinstance(e, dict) and next(iter(e.values())).get("cache") is False}


def _within(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/")


def load_graph(repo: Path) -> dict[str, Stage]:
    """Stages of `repo/dvc.yaml` in an order where every stage follows the stages it reads from."""
    spec = yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, body in spec.items():
        outs = {p: kind for kind in OUT_KINDS for p in _paths(body.get(kind))}
        uncached = set().union(*(_uncached(body.get(kind)) for kind in OUT_KINDS))
        stages[name] = Stage(name, _paths(body.get("deps")), outs, uncached)
    for stage in stages.values():
        for dep in stage.deps:
            for other in stages.values():
                if other is not stage and any(_within(dep, out) for out in other.outs):
                    stage.inputs[dep] = other.name
    return _topological(stages)


def _topological(stages: dict[str, Stage]) -> dict[str, Stage]:
    # Kahn's algorithm in file order, so the result is stable and matches how dvc.yaml reads.
    done: dict[str, Stage] = {}
    while len(done) < len(stages):
        ready = [s for s in stages.values() if s.name not in done and set(s.inputs.values()) <= set(done)]
        if not ready:
            raise ValueError(f"dvc.yaml: cycle among stages {sorted(set(stages) - set(done))}")
        done[ready[0].name] = ready[0]
    return done


def _lock_yaml():
    # dvc.lock is YAML 1.2 as DVC writes it (ruamel): PyYAML would read `lr: 2e-05` as a string, and a
    # rewritten lock would then differ from params.yaml and rerun the stage.
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True)


def read_lock(repo: Path) -> dict[str, dict]:
    """`dvc.lock` stage entries by name (empty before the first run)."""
    path = Path(repo) / "dvc.lock"
    if not path.exists():
        return {}
    return (_lock_yaml().load(path.read_text()) or {}).get("stages", {})


def merge_lock(repo: Path, entries: dict[str, dict]) -> None:
    """Adopt lock entries produced on another machine, so DVC here knows which hashes to pull.

    Only entries for stages this clone did not already record identically are written; DVC rewrites
    the file in its own format on the next `repro`.
    """
    current = read_lock(repo)
    if all(current.get(name) == entry for name, entry in entries.items()):
        return
    data = {"schema": "2.0", "stages": {**current, **entries}}
    with open(Path(repo) / "dvc.lock", "w") as f:
        _lock_yaml().dump(data, f)


def hashes(entry: dict, key: str) -> dict[str, str]:
    """{path: md5} of an entry's deps or outs (a `.dir` suffix marks a directory's manifest)."""
    return {item["path"]: item.get("md5") or item.get("hash", "") for item in entry.get(key, [])}


def pullable_inputs(graph: dict[str, Stage], name: str) -> list[str]:
    """The stage's data inputs that live in the DVC cache (and so on the remote); git-kept ones come with the clone."""
    stage = graph[name]
    return [p for p, up in stage.inputs.items() if not any(_within(p, u) for u in graph[up].uncached)]
