"""Stage `table` (comparison grid): the paper-style tables and bar plot over all cells' eval metrics.

usage: python stages/compare.py METRICS_DIR OUT_DIR [GRID_YAML]
With GRID_YAML (comparison/grid.yaml) only its overlaps x seeds enter the table. Writes OUT_DIR/table.md,
OUT_DIR/bars.png and OUT_DIR/summary.json (`dvc metrics diff` compares it).
"""

import sys
from pathlib import Path

import yaml

from srppo.evaluation import plots
from srppo.evaluation.compare import compare_grid
from srppo.io import write_json, write_text_atomic

HEADER = ("# Comparison grid\n\nScores in %, mean ± std over seeds (the testbed's exact checkers; lm-eval tasks and "
          "the AlpacaEval-style judge when configured). Regenerate: `dvc repro base && cd comparison && dvc repro`.\n\n")


def main(metrics_dir: str, out_dir: str, grid_yaml: str | None = None) -> None:
    grid = yaml.safe_load(Path(grid_yaml).read_text()) if grid_yaml else {}
    setups, seeds = grid.get("overlaps"), grid.get("seeds")
    result = compare_grid(Path(metrics_dir), setups, seeds)
    if result is None:
        raise SystemExit(f"table: no <setup>-s<seed>/eval.json under {metrics_dir}"
                         + (f" for overlaps {setups} x seeds {seeds} of {grid_yaml}" if grid_yaml else ""))
    out = Path(out_dir)
    write_text_atomic(out / "table.md", HEADER + result["table"])
    plots.bars_with_errors(result["scores"], out / "bars.png", "Comparison")
    write_json(out / "summary.json", result["summary"])
    print(result["table"])

if __name__ == "__main__":
    main(*sys.argv[1:])
