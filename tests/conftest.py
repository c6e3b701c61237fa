import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (the README's `-n 2`) the workers share the machine's cores: each worker, and every stage
# process it starts, gets its share of the threads (torch would otherwise start one thread per core in each,
# and two such processes on two cores slow each other down far more than they gain).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    os.environ.setdefault("MKL_NUM_THREADS", str(_share))


def live_rows(live_dir: Path) -> list[dict]:
    """A stage's DVCLive directory read back as its history: one row {"step": n, metric: value} per step.

    PPO's critic warm-up series (`warmup/<metric>.tsv`) have steps of their own and keep their plain names.
    """
    import csv

    rows: dict[int, dict] = {}
    for tsv in sorted((Path(live_dir) / "plots" / "metrics").rglob("*.tsv")):
        with open(tsv, newline="") as f:
            for rec in csv.DictReader(f, delimiter="\t"):
                step = int(rec["step"])
                rows.setdefault(step, {"step": step})[tsv.stem] = float(rec[tsv.stem])
    return [rows[step] for step in sorted(rows)]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "pt", seed=0)


@pytest.fixture(scope="session")
def tiny_sft_dir(tmp_path_factory) -> Path:
    """A second tiny model with other weights: stands in for p_SFT next to `tiny_dir` as p_PT."""
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "sft", seed=1)


@pytest.fixture(scope="session")
def reproduced_smoke(tmp_path_factory, tiny_dir):
    """The project as a committed git + DVC repo (smoke preset on the tiny model) after one full `dvc repro`,
    and that run's log. Tests that need a reproduced pipeline copy it (`copy_repo`) instead of paying
    for the whole pipeline again."""
    from test_flows_support import make_repo, run

    repo = make_repo(tmp_path_factory.mktemp("smoke") / "repo", tiny_dir)
    return repo, run(["dvc", "repro"], repo)


@pytest.fixture(autouse=True)
def fp32_unless_a_test_sets_up_a_runtime():
    """Mixed precision is a process setting (`setup_runtime` sets it per stage); a test that calls
    setup_runtime must not leave bf16 autocast on for the next test's exact comparisons."""
    from srppo.models.loading import set_attention
    from srppo.runtime.precision import set_autocast_dtype

    from srppo.models.packing import set_packing

    set_autocast_dtype(None)
    set_packing(False)  # `runtime.packing` too: padded forwards unless a test packs or sets up a runtime
    set_attention(None)  # `runtime.attention` too: transformers' default kernel unless a test sets up a runtime
    yield
    from srppo.models.packing import set_packing

    set_autocast_dtype(None)
    set_packing(False)  # `runtime.packing` too: padded forwards unless a test packs or sets up a runtime
    set_attention(None)
