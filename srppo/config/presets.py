"""Write `params.yaml` from a preset: `python -m srppo.config.presets configs/smoke.yaml [params.yaml]`.

A preset is a partial params file laid over the built-in defaults (the embedded default) and
validated as a whole, so a bad preset fails here rather than in the middle of a run.
With `--check`, only validate an existing params file.
"""

from __future__ import annotations

import sys

from srppo.config.files import ConfigError, apply_preset, dump_params, load_params
from srppo.config.params import Params
from srppo.io import write_text_atomic

HEADER = "# Generated from {src} by `python -m srppo.config.presets`. Every key is documented in srppo/config/ (params.py lists the sections).\n"


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--check"]:
            load_params(argv[1] if len(argv) > 1 else "params.yaml")
            print("params OK")
            return 0
        if not argv:
            print(__doc__)
            return 2
        preset, out = argv[0], (argv[1] if len(argv) > 1 else "params.yaml")
        params = Params() if preset == "default" else apply_preset(preset)
        write_text_atomic(out, HEADER.format(src=preset) + dump_params(params))
        print(f"wrote {out} from {preset}")
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
