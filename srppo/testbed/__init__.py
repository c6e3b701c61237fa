"""Verifiable instruction testbed: self-generated, exactly checkable training/eval data.

Why: the embedded default (SmolLM2-135M on CPU) needs data it can build offline and
deterministically from a seed, with a programmatic expert demonstration for every
prompt and an exact checker for every constraint (IFEval-style constraints and
GSM8K-style arithmetic), split into the paper's SFT/PPO overlap setups.
Pure standard library.
"""

from .checks import CHECKERS, check_response, count_words, loose_variants, parse_final_number
from .families import (
    FAMILIES, FAMILY_GROUPS, FAMILY_REPORT_GROUPS, GROUPS, REPORT_GROUPS, families_in, families_reported_as,
    generate_family,
)
from .splits import OVERLAPS, build_splits

__all__ = [
    "CHECKERS", "FAMILIES", "FAMILY_GROUPS", "FAMILY_REPORT_GROUPS", "GROUPS", "OVERLAPS", "REPORT_GROUPS",
    "build_splits", "check_response", "count_words", "families_in", "families_reported_as", "generate_family",
    "loose_variants", "parse_final_number",
]
