"""What a run form asks for: a preset and overrides, checked by srppo's own pydantic models.

`Overrides` mirrors `srppo.config.params.Params` with every field optional, so the Prefect UI renders one
input per params key (with its documentation) and rejects a typo or a wrong type when the run is
created; the merged result is then validated as a whole by `srppo.config.files.validate`, cross-field
checks included, before any stage starts.

A key left empty is not set: the UI's form sends `null` for every field left empty, so null never
overrides anything (a key that should be null goes in a preset file). `_partial` shapes the JSON
schema so that both Prefect UIs render every section open and a refusal names the key and its bound.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

from srppo.config.files import (
    ConfigError,
    apply_preset,
    deep_merge,
    dump_params,
    validate,
)
from srppo.config.params import Params

HEADER = "# Written by the srppo Prefect flow: preset={preset}, overrides={overrides}\n"


def _without_null_branch(schema: dict) -> None:
    """A field's schema without the `anyOf: [X, null]` its Optional adds (and without `default: null`)."""
    branches = [b for b in schema.pop("anyOf") if b != {"type": "null"}]
    schema.pop("default", None)
    schema.update({k: v for k, v in branches[0].items() if k not in schema})


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """`model` with every field optional, shaped for the run form of Prefect's two UIs:

    - A section (a nested model) has no `anyOf: [model, null]`: the UI shows it open, and a bad value
      inside is reported at that value, not as "the section is not valid under any of the given schemas".
    - A bounded value (ge, lt, ...) has none either (Prefect's server allows null again for a typed field
      without a default), so the refusal of 2.0 for `clip_eps` names the field and "the maximum of 1".
    - Anything else keeps `anyOf: [..., null]` with `default: null`: the UI then shows it unset and sends
      null (without the null branch, UI v1 sends `false` for every boolean and fills nested defaults).
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if section:
            ann = _partial(ann)
        elif info.metadata:  # bounds apply to a given value and show in the form
            ann = Annotated[(ann, *info.metadata)]
        shape = _without_null_branch if section or info.metadata else None
        fields[name] = (Optional[ann], Field(None, description=info.description,  # noqa: UP045 (runtime type)
                                             json_schema_extra=shape))
    doc = f"Overrides for `{model.__name__}`: only the keys you set are applied."
    config = ConfigDict(extra="forbid")
    return create_model(f"{model.__name__}Override", __config__=config, __doc__=doc, **fields)


Overrides = _partial(Params)


def _set_keys(value: Any) -> Any:
    """A nested dict without its null leaves and the sections they leave empty."""
    if not isinstance(value, dict):
        return value
    kept = {k: _set_keys(v) for k, v in value.items() if v is not None}
    return {k: v for k, v in kept.items() if v != {}}


def _null_keys(value: Any, prefix: str = "") -> list[str]:
    if not isinstance(value, dict):
        return []
    return [k for key, v in value.items()
            for k in ([prefix + key] if v is None else _null_keys(v, f"{prefix}{key}."))]


def unset_nulls(overrides: dict, where: str) -> dict:
    """`overrides` as given on a command line, refusing a null: there it cannot mean "not set"."""
    nulls = _null_keys(overrides)
    if nulls:
        raise ConfigError(f"{where} {', '.join(f'{k}=null' for k in nulls)}: a null override means \"not set\" "
                          "(an empty field of the run form); to make a key null, write it in a preset file "
                          "and pass --preset FILE.yaml")
    return overrides


def as_dict(overrides: BaseModel | dict | None) -> dict:
    """The keys actually set: a null (an empty field of the UI's form) means "not set"."""
    if overrides is None:
        return {}
    if not isinstance(overrides, BaseModel):
        overrides = Overrides.model_validate(overrides)
    return _set_keys(overrides.model_dump(mode="json", exclude_unset=True))


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
