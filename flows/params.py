"""What a run form asks for: a preset and overrides, checked by srppo's own pydantic models.

`Overrides` mirrors `srppo.config.Params` with every field optional, so the Prefect UI renders one
input per params key (with its documentation) and rejects a typo or a wrong type when the run is
created; the merged result is then validated as a whole by `srppo.config.validate`, cross-field
checks included, before any stage starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

from srppo.config import Params, apply_preset, deep_merge, dump_params, validate

HEADER = "# Written by the srppo Prefect flow: preset={preset}, overrides={overrides}\n"


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            ann = _partial(ann)
        elif info.metadata:  # bounds (ge, lt, ...) apply to a given value and show in the form
            ann = Annotated[(ann, *info.metadata)]
        fields[name] = (Optional[ann], Field(None, description=info.description))  # noqa: UP045 (runtime type)
    doc = f"Overrides for `{model.__name__}`: only the keys you set are applied."
    return create_model(f"{model.__name__}Override", __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


Overrides = _partial(Params)


def as_dict(overrides: BaseModel | dict | None) -> dict:
    """The keys actually set (an explicit null is kept: `base.gguf_package: null` is meaningful)."""
    if overrides is None:
        return {}
    if isinstance(overrides, BaseModel):
        return overrides.model_dump(mode="json", exclude_unset=True)
    return Overrides.model_validate(overrides).model_dump(mode="json", exclude_unset=True)


def preset_path(repo: Path, preset: str) -> Path:
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else repo / "configs" / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (repo / "configs").glob("*.yaml"))
        raise ValueError(f"unknown preset {preset!r}: use 'default', one of {known} or a YAML path")
    return path


def resolve(repo: Path, preset: str | None, overrides: dict) -> Params:
    """Preset (or the repo's params.yaml when none) with overrides laid over it, validated."""
    if preset is None:
        base = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    elif preset == "default":
        base = Params().model_dump(mode="json")
    else:
        base = apply_preset(preset_path(repo, preset)).model_dump(mode="json")
    return validate(deep_merge(base, overrides), f"preset={preset or 'params.yaml'} + overrides")


def write(repo: Path, params: Params, preset: str | None, overrides: dict) -> bool:
    """Write params.yaml when it would change; returns whether it did (stages read it from the cwd)."""
    path = repo / "params.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    if current == params.model_dump(mode="json"):
        return False
    # One comment line: JSON never wraps, and a wrapped YAML dump would spill out of the comment.
    header = HEADER.format(preset=preset or "params.yaml", overrides=json.dumps(overrides))
    path.write_text(header + dump_params(params))
    return True
