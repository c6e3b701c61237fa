"""Stage `prepare`: demonstrations, PPO prompts, calibration and eval sets as JSONL.

usage: python stages/prepare.py OUT_DIR METRICS_JSON
"""

import sys
from pathlib import Path

from srppo.data.prepare import SPLITS, describe, prepare
from srppo.data.records import write_jsonl
from srppo.io import write_json
from srppo.runner import Timer, load, log


def main(out_dir: str, metrics_path: str) -> None:
    params = load()
    timer = Timer("prepare")
    with timer.phase(f"build ({params.prepare.source}, overlap={params.prepare.overlap})"):
        splits = prepare(params.prepare)
    for name in SPLITS:  # each file is its own DVC output, written atomically
        write_jsonl(Path(out_dir) / f"{name}.jsonl", splits[name])
    stats = describe(splits)
    for name in SPLITS:
        log("prepare", f"{name}: {stats[name]['rows']} rows, {len(stats[name]['families'])} families")
    write_json(metrics_path, {**stats, **timer.report()})


if __name__ == "__main__":
    main(*sys.argv[1:])
