"""The pipeline's common record schema: validation, and JSONL reading/writing with clear errors.

Records are plain JSON-serialisable dicts:

- demonstration: ``{"id", "messages", "response", "family", "checks"}``; ``messages`` is the prompt context
  (``{"role": "system"|"user"|"assistant", "content": str}`` items, ending with a user turn) and ``response``
  the final assistant turn;
- prompt: the same without ``response``;
- eval item: a prompt (or demonstration) whose ``checks`` list holds ``{"kind": "ifeval", "instruction_id_list",
  "kwargs"}`` or ``{"kind": "final_answer", "value": <number>}`` entries.

Every problem is a :class:`DataError` whose message names the file (or hub id), the 1-based row and the field,
e.g. ``data/demos.jsonl row 17: field 'response' is empty``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from srppo.io import atomic_file

ROLES = ("system", "user", "assistant")

Location = int | tuple[str, int]


class DataError(ValueError):
    """A data problem, located by source (file or hub id), 1-based row and field when known.

    ``DataError(source, row, field, problem)`` formats ``"<source> row <row>: field '<field>' <problem>"``;
    ``DataError(message)`` alone keeps a preformatted message as it is.
    """

    def __init__(self, source: Any, row: int | None = None, field: str | None = None,
                 problem: str | None = None) -> None:
        self.source, self.row, self.field, self.problem = str(source), row, field, problem
        if row is None and field is None and problem is None:
            super().__init__(self.source)
            return
        where = self.source if row is None else f"{self.source} row {row}"
        what = problem or "is invalid"
        super().__init__(f"{where}: {what if field is None else f'field {field!r} {what}'}")

    def __reduce__(self):  # keeps the exception picklable (worker processes, Prefect)
        return (type(self), (self.source, self.row, self.field, self.problem))


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def require_str(obj: dict, key: str, source: Any, row: int | None, field: str | None = None) -> str:
    """``obj[key]`` as a non-blank string, else a DataError naming ``field`` (default: ``key``)."""
    field = field or key
    value = obj.get(key)
    if value is None:
        raise DataError(source, row, field, "is missing")
    if not isinstance(value, str):
        raise DataError(source, row, field, f"must be a string, got {type_name(value)}")
    if not value.strip():
        raise DataError(source, row, field, "is empty")
    return value


def validate_prompt(rec: Any, source: Any, row: int) -> dict:
    """Check a prompt record (id, messages ending with a user turn, family, checks); return it."""
    if not isinstance(rec, dict):
        raise DataError(source, row, None, f"must be a JSON object, got {type_name(rec)}")
    require_str(rec, "id", source, row)
    _validate_messages(rec.get("messages"), source, row)
    require_str(rec, "family", source, row)
    _validate_checks(rec.get("checks"), source, row)
    return rec


def validate_demo(rec: Any, source: Any, row: int) -> dict:
    """Check a demonstration: a valid prompt record plus a non-empty ``response`` string; return it."""
    validate_prompt(rec, source, row)
    require_str(rec, "response", source, row)
    return rec


def _validate_messages(messages: Any, source: Any, row: int) -> None:
    if messages is None:
        raise DataError(source, row, "messages", "is missing")
    if not isinstance(messages, list):
        raise DataError(source, row, "messages", f"must be a list of {{role, content}} objects, "
                                                 f"got {type_name(messages)}")
    if not messages:
        raise DataError(source, row, "messages", "is empty (needs at least one user turn)")
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise DataError(source, row, field, f"must be a {{role, content}} object, got {type_name(msg)}")
        if msg.get("role") not in ROLES:
            raise DataError(source, row, f"{field}.role", f"must be one of {', '.join(ROLES)}, "
                                                         f"got {msg.get('role')!r}")
        require_str(msg, "content", source, row, f"{field}.content")
    last = messages[-1]["role"]
    if last != "user":
        raise DataError(source, row, f"messages[{len(messages) - 1}].role",
                        f"must be 'user' (the prompt must end with a user turn), got {last!r}")


def _validate_checks(checks: Any, source: Any, row: int) -> None:
    if checks is None:
        raise DataError(source, row, "checks", "is missing (use [] when there are none)")
    if not isinstance(checks, list):
        raise DataError(source, row, "checks", f"must be a list, got {type_name(checks)}")
    for i, check in enumerate(checks):
        field = f"checks[{i}]"
        if not isinstance(check, dict):
            raise DataError(source, row, field, f"must be an object, got {type_name(check)}")
        kind = require_str(check, "kind", source, row, f"{field}.kind")
        if kind == "ifeval":
            _validate_ifeval_check(check, source, row, field)
        elif kind == "final_answer":
            value = check.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(source, row, f"{field}.value", f"must be a number, got {type_name(value)}")


def _validate_ifeval_check(check: dict, source: Any, row: int, field: str) -> None:
    ids, kwargs = check.get("instruction_id_list"), check.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) and x for x in ids):
        raise DataError(source, row, f"{field}.instruction_id_list", "must be a non-empty list of strings")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise DataError(source, row, f"{field}.kwargs", "must be a list of objects, one per instruction id")


def content_key(rec: dict) -> str:
    """What makes two records the same example whatever their ids: the messages and the response."""
    return json.dumps([rec.get("messages"), rec.get("response")], sort_keys=True, ensure_ascii=False)


def check_unique_ids(records: Sequence[dict], source: Any, rows: Sequence[Location] | None = None) -> None:
    """DataError naming both rows when two records share an id.

    ``rows`` gives each record's location: a 1-based row number in ``source``, or a ``(file, row)`` pair
    when the records come from several files; default: the record's 1-based position.
    """
    seen: dict[Any, Location] = {}
    for i, rec in enumerate(records):
        here = rows[i] if rows is not None else i + 1
        rid = rec.get("id")
        if rid in seen:
            first = seen[rid]
            if isinstance(here, tuple):
                raise DataError(here[0], here[1], "id",
                                f"duplicates id {rid!r} of {first[0]} row {first[1]}")
            raise DataError(source, here, "id", f"duplicates id {rid!r} of row {first}")
        seen[rid] = here


def scan_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """``(line number, record)`` for each non-blank line of a JSONL file; DataError on bad bytes or JSON."""
    if not Path(path).is_file():
        raise DataError(path, None, None, "does not exist (or is not a file)")
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, None, f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                                    f"offset {exc.start} of the line)") from None
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, None, f"is not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(path, lineno, None, f"must be a JSON object, got {type_name(rec)}")
            out.append((lineno, rec))
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSONL file (blank lines skipped); DataError with file and row on bad input."""
    return [rec for _, rec in scan_jsonl(path)]


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSONL atomically (temp file in the same directory + ``os.replace``); return the count.

    A crash, a full disk or an unserialisable record leaves any previous file untouched and no temp file
    behind; a failed write raises ``OSError`` naming ``path`` (see :func:`srppo.io.atomic_file`).
    """
    count = 0
    with atomic_file(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count
