"""The one typed config: pydantic models mirroring `params.yaml` (params.py), and presets (presets.py).

Bottom of the library with `srppo.io`: imports nothing of srppo but `srppo.io`.
"""
