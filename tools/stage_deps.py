"""What a stage depends on besides its declared data: the project files its script imports, transitively, and
the local files params.yaml names. tools/dvc_pipelines.py writes both into every stage's `deps`.

Why derived, not written by hand: a stage must rerun exactly when something it reads changes; a hand-kept
list misses a new import (stale outputs) or keeps an old one (reruns for nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# Code dependencies: the project files a stage script imports, transitively.
# ---------------------------------------------------------------------------------------------------

def _module_file(module: str, roots: list[Path]) -> Path | None:
    for root in roots:
        base = root.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _with_packages(module: str, roots: list[Path]) -> list[Path]:
    """`a.b.c` -> the files of a, a.b and a.b.c that exist: importing a module runs its packages first."""
    parts = module.split(".")
    found = (_module_file(".".join(parts[:i]), roots) for i in range(1, len(parts) + 1))
    return [f for f in found if f]


def _direct_imports(path: Path, roots: list[Path]) -> set[Path]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]) if path.is_relative_to(ROOT) else ""
    found: set[Path] = set()
    for node in ast.walk(tree):  # imports inside functions count: they run when the stage does
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_with_packages(alias.name, roots))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.update(_with_packages(module, roots))
            for alias in node.names:  # `from pkg import module`
                sub = _module_file(f"{module}.{alias.name}", roots)
                if sub:
                    found.add(sub)
    return found


def code_deps(script: Path) -> list[str]:
    """Every project file `script` imports, transitively (itself included), relative to the root."""
    roots = [script.parent, ROOT]  # Python puts the script's folder first on sys.path
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(p for p in _direct_imports(path, roots) if p.is_relative_to(ROOT))
    return sorted(str(p.relative_to(ROOT)) for p in seen)


# ---------------------------------------------------------------------------------------------------
# Local files named in params.yaml.
# ---------------------------------------------------------------------------------------------------

def _values(params: dict, key: str) -> list:
    node = [params]
    for part in key.split("."):
        node = [v for n in node if isinstance(n, dict)
                for v in (n.values() if part == "*" else [n.get(part)])]
    return [v for v in node if isinstance(v, str)]


def local_files(params: dict, keys: list[str]) -> list[str]:
    """The values of `keys` that name an existing local file or directory (a hub id names none)."""
    found = []
    for key in keys:
        for value in _values(params, key):
            path = Path(value) if Path(value).is_absolute() else ROOT / value
            if path.exists():
                found.append(str(path) if Path(value).is_absolute() else value)
    return sorted(set(found))
