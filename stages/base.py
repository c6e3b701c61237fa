"""Stage `base`: materialise the pretrained model p_PT as a safetensors HF directory.

usage: python stages/base.py OUT_DIR METRICS_JSON
"""

import sys

from srppo.io import atomic_dir, write_json
from srppo.models import materialise_base
from srppo.runner import Timer, load


def main(out_dir: str, metrics_path: str) -> None:
    params = load()
    timer = Timer("base")
    with timer.phase("materialise"), atomic_dir(out_dir) as tmp:
        info = materialise_base(params.base, tmp)
    # Timings go to metrics, never into the model directory: its hash must depend on the weights alone.
    write_json(metrics_path, {**info, **timer.report()})


if __name__ == "__main__":
    main(*sys.argv[1:])
