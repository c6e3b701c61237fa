"""The one typed config: pydantic models mirroring `params.yaml` (params.py, one module per group of sections); reading, merging and
validating params files (files.py); presets (presets.py).

Bottom of the library with `srppo.io`: imports nothing of srppo but `srppo.io`.
"""
