"""Wall time of each pipeline stage from the last `dvc repro`, as a markdown table.

    python bench/stage_times.py            # reads reports/*.json
"""

import json
import platform
from pathlib import Path

import torch

SOURCES = {
    "base": "reports/base.json",
    "prepare": "reports/prepare.json",
    "sft": "reports/sft.json",
    "diagnose": "reports/diagnose.json",
    "calibrate": "reports/calibrate.json",
    "rollouts": "reports/rollouts.json",
    "ppo": "reports/ppo.json",
    "eval": "reports/eval.json",
}


def main() -> None:
    rows, total = [], 0.0
    for stage, path in SOURCES.items():
        p = Path(path)
        seconds = json.loads(p.read_text())["seconds"]["total"] if p.exists() else None
        total += seconds or 0.0
        rows.append(f"| {stage} | {'–' if seconds is None else f'{seconds:.0f}'} |")
    print(f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}\n")
    print("| stage | seconds (stage's own work, excl. interpreter start) |\n|---|---|")
    print("\n".join(rows))
    print(f"| **total** | **{total:.0f}** |")


if __name__ == "__main__":
    main()
