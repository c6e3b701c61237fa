"""Stage `base`: materialise the pretrained model p_PT as a safetensors HF directory.

usage: python stages/base.py OUT_DIR METRICS_JSON REPORT_JSON
"""

import sys

from srppo.io import atomic_dir
from srppo.models.loading import materialise_base
from srppo.runtime.stage import Timer, load, write_results


def main(out_dir: str, metrics_path: str, report_path: str) -> None:
    params = load()
    timer = Timer("base")
    with timer.phase("materialise"), atomic_dir(out_dir) as tmp:
        info = materialise_base(params.base, tmp)
    # Timings and the source path go to the report, never into the model directory: its hash must depend
    # on the weights alone.
    write_results(metrics_path, report_path, {"parameters": info["parameters"]}, info, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
