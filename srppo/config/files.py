"""Params files: read, lay presets and overrides over the defaults, validate as a whole, write.

A bad file fails here with a message that names the file and every offending key, before any work.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from srppo.config.params import Params


class ConfigError(ValueError):
    """An invalid params file; the message names the file and the offending key."""


# Unknown keys that look like remote credentials get a pointer to where those belong.
CREDENTIAL_WORDS = ("remote", "key", "secret", "password", "token", "credential")
CREDENTIAL_HINT = ("  credentials of DVC remotes go in .dvc/config.local (`dvc remote modify --local`) or the "
                   "environment, never in params.yaml")


def _names(loc: tuple, value) -> list[str]:
    """The key path of an error and every key nested in its value."""
    nested = [k for key, v in value.items() for k in [str(key), *_names((), v)]] if isinstance(value, dict) else []
    return [str(p) for p in loc] + nested


def _format_errors(err: ValidationError, source: str) -> str:
    lines, hint = [f"{source}: invalid parameters"], False
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        # An unknown key's value does not help fix it, and may be a secret pasted into the wrong file.
        shown = e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], dict)
        lines.append(f"  {key}: {e['msg']}" + (f" (got {e['input']!r})" if shown else ""))
        hint |= e["type"] == "extra_forbidden" and any(
            w in name.lower() for name in _names(e["loc"], e["input"]) for w in CREDENTIAL_WORDS)
    return "\n".join(lines + [CREDENTIAL_HINT] * hint)


def validate(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: str = "") -> Params:
    """The params file, with `overrides` ("a.b=1 c.d=[x, y]", see `parse_overrides`) laid over it."""
    raw = read_mapping(Path(path), "params file")
    source = f"{path} with overrides {overrides!r}" if overrides.strip() else str(path)
    return validate(deep_merge(raw or {}, parse_overrides(overrides)), source)


def read_mapping(path: Path, what: str, empty_ok: bool = False) -> dict:
    """A YAML file that must hold a mapping of sections; every way it can fail names the file. An empty
    params file is an error (a preset may be empty: it changes nothing)."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None and empty_ok:
        return {}
    if raw is None:
        raise ConfigError(f"{path}: the {what} is empty; write one with `python -m srppo.config.presets default {path}`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of sections (runtime:, sft:, ...), got a "
                          f"{type(raw).__name__}")
    return raw


def parse_overrides(text: str) -> dict:
    """'runtime.seed=1 eval.models=[sft, spin]' -> nested dict; values are YAML.

    Items are separated by ' key=' boundaries, so a value may hold spaces (a YAML list, a path).
    The comparison grid passes its per-cell settings this way (SRPPO_SET in the stage command), which
    keeps them in the command DVC hashes while every cell shares one params.yaml.
    """
    return parse_override_items(re.split(r"\s+(?=[A-Za-z_][\w.]*=)", text.strip()) if text.strip() else [])


def parse_override_items(items: list[str]) -> dict:
    """['runtime.seed=1', 'ppo.kl_coef=0.5'] -> nested dict; values are YAML (the CLI's --set pairs)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from None
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set to a value and used as a section")
        node[leaf] = parsed
    return out


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_preset(preset_path: str | Path, base: dict | None = None) -> Params:
    """Preset = a partial params file laid over the defaults (or over `base`)."""
    preset_path = Path(preset_path)
    raw = read_mapping(preset_path, "preset", empty_ok=True)
    merged = deep_merge(base if base is not None else Params().model_dump(), raw)
    return validate(merged, str(preset_path))


def dump_params(params: Params) -> str:
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, width=110)
