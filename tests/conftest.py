import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "pt", seed=0)


@pytest.fixture(scope="session")
def tiny_sft_dir(tmp_path_factory) -> Path:
    """A second tiny model with other weights: stands in for p_SFT next to `tiny_dir` as p_PT."""
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "sft", seed=1)
