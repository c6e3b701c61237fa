"""The base of every params section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise: fail before any work.
    # .inf / .nan are YAML numbers but never a setting: refused for every float, naming the key
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
