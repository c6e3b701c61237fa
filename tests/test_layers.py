"""The library's layering (srppo/__init__.py) is a contract: an upward import fails the suite, by name."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_no_layer_imports_a_layer_above_it():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    res = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "srppo layers KEPT" in res.stdout
