"""Stage `base`: materialise the pretrained model p_PT as a safetensors HF directory.

usage: python stages/base.py OUT_DIR
"""

import sys

from srppo.io import atomic_dir, write_json
from srppo.models import materialise_base
from srppo.runner import Timer, load


def main(out_dir: str) -> None:
    params = load()
    timer = Timer("base")
    with timer.phase("materialise"), atomic_dir(out_dir) as tmp:
        info = materialise_base(params.base, tmp)
        write_json(tmp / "srppo_base.json", {**info, **timer.report()})


if __name__ == "__main__":
    main(*sys.argv[1:])
