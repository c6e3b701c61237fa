"""Pack what the GPU check needs beside the repository, for a GPU machine that can download nothing.

    python tools/gpu_check/prepare.py            # -> .gpu-check/ (git-ignored): wheels/, smollm2/, MANIFEST.json

The machine has Python 3.12, PyTorch, transformers, safetensors, matplotlib and pandas (its image's list,
`PREINSTALLED`), not the project's other pure-Python dependencies, DeepSpeed or DVCLive: they travel as wheels,
pinned to this environment's versions (pure Python, or CPython 3.12 manylinux x86-64 builds). DeepSpeed has
no wheel on PyPI: it is built here without its compiled ops (they build on first use, where nvcc is).

The embedded model's GGUF (98 MB) is over what a call to the machine can carry (64 MiB with the repository),
so its architecture and tokenizer travel (`smollm2/`: config, tokenizer, chat template) and the check
initialises the weights from a seed: the same shapes, kernels and tokens per second, not the same answers.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".gpu-check"
LIMIT = 64 << 20  # a device call's working tree, repository included
ROOTS = ("pydantic", "deepspeed", "dvclive", "pyyaml")  # what the stages import that the machine lacks
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json")
# the GPU image's packages (the lent machine's image, as its documentation lists them); not carried
PREINSTALLED = set("""
accelerate aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer click
cloudpickle contourpy cycler einops filelock fonttools frozenlist fsspec h11 hf-xet httpcore httpx huggingface-hub
idna jinja2 joblib kiwisolver markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict networkx ninja
numpy nvidia-ml-py packaging pandas peft pillow pip propcache protobuf psutil py-cpuinfo pyarrow pygments
pyparsing python-dateutil pyyaml regex requests rich safetensors scipy sentencepiece setuptools six sympy
tokenizers torch tqdm transformers triton typer typing-extensions urllib3 wheel wrapt yarl zipp
""".split())
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...] = ROOTS, skip: set[str] = PREINSTALLED) -> dict[str, str]:
    """{distribution: version} of `roots` and everything they require here, less what the machine has."""
    need, todo = {}, list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in need or name in skip:
            continue
        dist = md.distribution(name)
        need[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12",
                                                          "sys_platform": "linux", "platform_machine": "x86_64"}):
                todo.append(req.name)
    return need


def download(pins: dict[str, str], dest: Path) -> None:
    """Each pin's CPython 3.12 manylinux or pure-Python wheel; one published as source only (DeepSpeed, antlr4's
    runtime) is built here into a wheel, DeepSpeed without its compiled ops (they build on first use)."""
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    for name, version in sorted(pins.items()):
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(dest),
                              f"{name}=={version}"], capture_output=True)
        if got.returncode:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(dest), f"{name}=={version}"], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})
        print(f"  {name}=={version}{' (built from source)' if got.returncode else ''}", flush=True)


def tree_size() -> int:
    """What a device call sends besides .gpu-check/: tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "base",
                    help="a model directory with the embedded model's config and tokenizer (`dvc repro base`)")
    a = ap.parse_args(argv)
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "wheels").mkdir(parents=True)
    pins = closure()
    download(pins, OUT / "wheels")
    (OUT / "smollm2").mkdir()
    for name in MODEL_FILES:
        if (a.model / name).is_file():
            shutil.copy(a.model / name, OUT / "smollm2" / name)
    if not (OUT / "smollm2" / "config.json").is_file():
        raise SystemExit(f"{a.model}: no config.json; run `dvc repro base` first")
    carried = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    total = carried + tree_size()
    (OUT / "MANIFEST.json").write_text(json.dumps({"wheels": pins, "carried_bytes": carried,
                                                   "with_repository_bytes": total}, indent=1))
    print(f"{len(pins)} wheels + the model's config and tokenizer: {carried / 2**20:.1f} MiB; with the repository "
          f"{total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}")
    return 0 if total <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
