"""Load real dataset formats into the common record schema (see :mod:`srppo.data.records`).

``load_records(source, fmt)`` reads a local file (.jsonl/.json/.parquet/.csv), a directory of such files, or a
Hugging Face hub dataset id, always through ``datasets.load_dataset`` (local files with the "json"/"parquet"/"csv"
builders). JSON files are pre-scanned line by line first, so invalid JSON or non-UTF-8 bytes give a
:class:`DataError` naming the file and row instead of a pyarrow stack trace; if pyarrow still cannot build a table
from valid JSON (e.g. a column mixing strings and numbers), the pre-scanned rows are used as they are.

Formats (``FORMATS``):

- ``messages`` (Tulu-v2 style): ``messages`` list of {role, content}; the final assistant turn is the response.
- ``alpaca``: ``instruction``, optional ``input``, ``output`` (LLaMA-Factory's optional ``system`` and
  ``history`` [[user, assistant], ...] become earlier turns).
- ``prompt`` (UltraFeedback-style prompt sets): a ``prompt``/``instruction``/``question`` string (or message
  list), else a
  ``messages`` list whose trailing assistant turn is dropped.
- ``gsm8k``: ``question``, ``answer`` ending in ``#### N``: a demonstration whose response ends with
  "The answer is N." and a ``final_answer`` check.
- ``ifeval``: ``key``, ``prompt``, ``instruction_id_list``, ``kwargs``: prompt records with an ``ifeval`` check.
- ``records``: the pipeline's own schema, validated; the flat ``{"id", "prompt", "response"}`` form (prompt a
  string) is converted to messages. Rows with a ``response`` are demonstrations, others prompts.

Ids: the row's ``id``/``key``/``prompt_id`` as a string, else ``f"{family}-{n:06d}"`` (n: 1-based row over the
whole source). Family: the ``family`` argument, else the row's ``family`` or ``source`` string, else a default
per format (``DEFAULT_FAMILY``).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from srppo.data.records import (DataError, check_unique_ids, content_key, require_str, scan_jsonl, type_name,
                                validate_demo, validate_prompt)
from srppo.runtime.stage import log

FORMATS = ("messages", "alpaca", "prompt", "gsm8k", "ifeval", "records")
DEFAULT_FAMILY = {"messages": "tulu", "alpaca": "alpaca", "prompt": "ultrafeedback", "gsm8k": "gsm8k",
                  "ifeval": "ifeval", "records": "records"}
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_DEMO_FORMATS = ("messages", "alpaca", "gsm8k")
_ID_KEYS = ("id", "key", "prompt_id")
_GSM8K_FINAL = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.M)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def load_records(source: str, fmt: str, split: str = "train", limit: int | None = None, seed: int = 0,
                 *, family: str | None = None, demos: bool = False) -> list[dict]:
    """Load ``source`` in format ``fmt`` as validated records (see the module docstring).

    ``limit``: deterministic subsample (seeded shuffle of all rows, then the first ``limit``); only the rows
    taken are converted and validated. ``split`` selects the hub split, or the files of a directory named after
    it (``train.jsonl``, ``train-00000-of-00001.parquet``, ``train/...``). ``demos``: every row must be a
    demonstration (carry a response), checked here so that an error names this file's own row.

    A row whose content (messages and response) repeats an earlier row's is dropped, whatever their ids, and
    the drop logged with both rows: copies would otherwise land on both sides of a split (a held-out
    calibration row in the SFT demonstrations).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    tables = _open_source(str(source), split)
    picks = _pick(tables, limit, seed)
    records, where, first_seen, repeats = [], [], {}, []
    for (table, index, ordinal), raw in zip(picks, _fetch(picks)):
        ctx = _Ctx(table.name, table.row(index), ordinal, fmt, family)
        rec = _CONVERTERS[fmt](_clean(raw), ctx)
        validate = validate_demo if demos or fmt in _DEMO_FORMATS or "response" in rec else validate_prompt
        records.append(validate(rec, ctx.source, ctx.row))
        where.append((ctx.source, ctx.row))
    check_unique_ids(records, source, where)  # a repeated id is an error, identical rows or not
    kept = []
    for rec, here in zip(records, where):
        key = content_key(rec)
        if key in first_seen:
            repeats.append((here, first_seen[key]))
            continue
        first_seen[key] = here
        kept.append(rec)
    if repeats:
        shown = "; ".join(f"{s} row {r} repeats row {r0}" + ("" if s0 == s else f" of {s0}")
                          for (s, r), (s0, r0) in repeats[:5])
        log("data", f"{source}: dropped {len(repeats)} row(s) whose messages and response repeat an earlier row's "
            f"({shown}{'; ...' if len(repeats) > 5 else ''})")
    return kept


# ---------------------------------------------------------------- sources


@dataclass
class _Table:
    name: str  # file path or hub id, as named in errors
    size: int
    fetch: Callable[[list[int]], list[dict]]
    rows: list[int] | None = None  # 1-based row number of each index (JSONL line numbers), default index + 1

    def row(self, index: int) -> int:
        return self.rows[index] if self.rows else index + 1


def _open_source(source: str, split: str) -> list[_Table]:
    path = Path(source).expanduser()
    if path.is_dir():
        tables = [_open_file(p) for p in _split_files(path, split)]
    elif path.is_file():
        tables = [_open_file(path)]
    elif _looks_like_path(source):
        raise DataError(source, None, None, "does not exist (no such file or directory)")
    else:
        tables = [_open_hub(source, split)]
    if not any(t.size for t in tables):
        raise DataError(source, None, None, "contains no records")
    return tables


def _looks_like_path(source: str) -> bool:
    return (Path(source).suffix.lower() in BUILDERS or source.startswith((".", "/", "~", "\\"))
            or source.count("/") > 1 or "\\" in source)


def _split_files(directory: Path, split: str) -> list[Path]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    if not files:
        raise DataError(directory, None, None, f"contains no {'/'.join(BUILDERS)} files")
    named = [p for p in files if p.stem == split or p.stem.startswith(f"{split}-")
             or split in p.relative_to(directory).parts[:-1]]
    return named or files


def _open_file(path: Path) -> _Table:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(path, None, None, f"has an unsupported extension; expected one of {', '.join(BUILDERS)}")
    scanned = _prescan_json(path) if builder == "json" else None
    if scanned == []:
        raise DataError(path, None, None, "contains no records")
    try:
        ds = _load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # pyarrow could not type the columns: fall back to the valid pre-scanned rows
        if scanned is None:
            raise DataError(path, None, None, f"could not be read as {builder}: {type(exc).__name__}: {exc}") from exc
        return _Table(str(path), len(scanned), lambda idx: [scanned[i][1] for i in idx], [r for r, _ in scanned])
    rows = [r for r, _ in scanned] if scanned and len(scanned) == len(ds) else None
    return _Table(str(path), len(ds), lambda idx: ds.select(idx).to_list(), rows)


def _prescan_json(path: Path) -> list[tuple[int, dict]]:
    """Rows of a .jsonl/.json file with their row numbers; DataError (file + row) on bad bytes or JSON."""
    if path.suffix.lower() == ".jsonl":
        return scan_jsonl(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(path, None, None, f"line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    if not text.lstrip().startswith("["):
        return scan_jsonl(path)  # JSON Lines under a .json name
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, None, None, f"is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(path, i + 1, None, f"must be a JSON object, got {type_name(item)}")
    return list(enumerate(items, 1))


def _open_hub(source: str, split: str) -> _Table:
    try:
        ds = _load_dataset(source, split=split)
    except Exception as exc:
        raise DataError(source, None, None, (
            f"is not a local file or directory, and could not be loaded as a Hugging Face hub dataset id "
            f"(split {split!r}; offline?): {type(exc).__name__}: {exc}. Download it and pass a local "
            f".jsonl/.json/.parquet/.csv file or directory instead")) from exc
    return _Table(source, len(ds), lambda idx: ds.select(idx).to_list())


def _load_dataset(*args, **kwargs):
    import datasets  # deferred: keeps `import srppo.data.loaders` light

    return datasets.load_dataset(*args, **kwargs)


def _pick(tables: list[_Table], limit: int | None, seed: int) -> list[tuple[_Table, int, int]]:
    """``(table, index, ordinal)`` per row to load: all in order, or a seeded shuffle cut to ``limit``."""
    flat = [(t, i) for t in tables for i in range(t.size)]
    order = list(range(len(flat)))
    if limit is not None:
        random.Random(seed).shuffle(order)
        order = order[:limit]
    return [(*flat[k], k + 1) for k in order]


def _fetch(picks: list[tuple[_Table, int, int]]) -> list[dict]:
    """The raw rows of ``picks``, fetched with one ``select`` per table, in the order of ``picks``."""
    wanted: dict[int, tuple[_Table, list[int]]] = {}
    for table, index, _ in picks:
        wanted.setdefault(id(table), (table, []))[1].append(index)
    got = {}
    for table, indices in wanted.values():
        got.update(((id(table), i), raw) for i, raw in zip(indices, table.fetch(indices)))
    return [got[(id(t), i)] for t, i, _ in picks]


def _clean(value: Any) -> Any:
    """Drop null (and CSV NaN) dict entries: Arrow fills keys absent from a row with nulls."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------- formats


class _Ctx(NamedTuple):
    source: str
    row: int
    ordinal: int
    fmt: str
    family: str | None

    def err(self, field: str, problem: str) -> DataError:
        return DataError(self.source, self.row, field, problem)

    def text(self, raw: dict, key: str) -> str:
        return require_str(raw, key, self.source, self.row)


def _family(raw: dict, ctx: _Ctx) -> str:
    if ctx.family:
        return ctx.family
    for key in ("family", "source"):
        if isinstance(raw.get(key), str) and raw[key].strip():
            return raw[key]
    return DEFAULT_FAMILY[ctx.fmt]


def _record_id(raw: dict, family: str, ctx: _Ctx) -> Any:
    for key in _ID_KEYS:
        value = raw.get(key)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, (str, int, float)):
            return str(value)
    return f"{family}-{ctx.ordinal:06d}"


def _build(raw: dict, ctx: _Ctx, messages: list, response: Any = None, checks: list | None = None) -> dict:
    family = _family(raw, ctx)
    rec: dict[str, Any] = {"id": _record_id(raw, family, ctx), "messages": messages}
    if response is not None:
        rec["response"] = response
    rec.update(family=family, checks=checks or [])
    return rec


def _as_list(value: Any) -> Any:
    """A JSON-encoded list/object string (CSV cells) decoded; anything else unchanged."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _messages(value: Any, ctx: _Ctx, field: str = "messages") -> list[dict]:
    value = _as_list(value)
    if value is None:
        raise ctx.err(field, "is missing")
    if not isinstance(value, list):
        raise ctx.err(field, f"must be a list of {{role, content}} objects, got {type_name(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise ctx.err(f"{field}[{i}]", f"must be a {{role, content}} object, got {type_name(msg)}")
        if msg.get("role") == "system" and msg.get("content") in (None, ""):
            continue  # empty system prompts carry nothing
        out.append({"role": msg.get("role"), "content": msg.get("content")})
    return out


def _from_messages(raw: dict, ctx: _Ctx) -> dict:
    messages = _messages(raw.get("messages"), ctx)
    if not messages or messages[-1]["role"] != "assistant":
        raise ctx.err("messages", "has no final assistant turn (the response)")
    if len(messages) < 2:
        raise ctx.err("messages", "has no user turn before the final assistant turn")
    last = f"messages[{len(_as_list(raw['messages'])) - 1}].content"
    response = require_str(messages[-1], "content", ctx.source, ctx.row, last)
    return _build(raw, ctx, messages[:-1], response=response)


def _user_text(raw: dict, ctx: _Ctx, key: str) -> str:
    """``raw[key]``, plus "\\n\\n" + ``input`` when an alpaca-style ``input`` is given."""
    text = ctx.text(raw, key)
    extra = raw.get("input")
    if extra is not None and not isinstance(extra, str):
        raise ctx.err("input", f"must be a string, got {type_name(extra)}")
    return text + ("\n\n" + extra if extra and extra.strip() else "")


def _from_alpaca(raw: dict, ctx: _Ctx) -> dict:
    messages = []
    if isinstance(raw.get("system"), str) and raw["system"].strip():
        messages.append({"role": "system", "content": raw["system"]})
    history = _as_list(raw.get("history")) or []
    for i, turn in enumerate(history if isinstance(history, list) else [history]):
        if not (isinstance(turn, list) and len(turn) == 2):
            raise ctx.err(f"history[{i}]", "must be a [user, assistant] pair")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages.append({"role": "user", "content": _user_text(raw, ctx, "instruction")})
    return _build(raw, ctx, messages, response=ctx.text(raw, "output"))


def _from_prompt(raw: dict, ctx: _Ctx) -> dict:
    for key in ("prompt", "instruction", "question"):
        if isinstance(raw.get(key), list):
            return _build(raw, ctx, _strip_answer(_messages(raw[key], ctx, key)))
        if key in raw:
            return _build(raw, ctx, [{"role": "user", "content": _user_text(raw, ctx, key)}])
    if "messages" in raw:
        return _build(raw, ctx, _strip_answer(_messages(raw["messages"], ctx)))
    raise ctx.err("prompt", "is missing (expected a 'prompt', 'instruction' or 'question' string, "
                           "or a 'messages' list)")


def _strip_answer(messages: list[dict]) -> list[dict]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _from_gsm8k(raw: dict, ctx: _Ctx) -> dict:
    question, answer = ctx.text(raw, "question"), ctx.text(raw, "answer")
    finals = list(_GSM8K_FINAL.finditer(answer))
    if not finals:
        raise ctx.err("answer", "has no final '#### <number>' line")
    final = finals[-1]
    number = final.group(1).replace(",", "").lstrip("$").rstrip(".")
    if not _NUMBER.fullmatch(number):
        raise ctx.err("answer", f"final line '{final.group(0).strip()}' does not give a number")
    value = float(number) if "." in number else int(number)
    response = answer[:final.start()] + f"The answer is {number}." + answer[final.end():]
    return _build(raw, ctx, [{"role": "user", "content": question}], response=response,
                  checks=[{"kind": "final_answer", "value": value}])


def _from_ifeval(raw: dict, ctx: _Ctx) -> dict:
    prompt = ctx.text(raw, "prompt")
    ids, kwargs = _as_list(raw.get("instruction_id_list")), _as_list(raw.get("kwargs"))
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) and x for x in ids):
        raise ctx.err("instruction_id_list", f"must be a non-empty list of strings, got {type_name(ids)}")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ctx.err("kwargs", "must be a list of objects, one per entry of 'instruction_id_list'")
    check = {"kind": "ifeval", "instruction_id_list": ids, "kwargs": kwargs, "prompt": prompt}
    return _build(raw, ctx, [{"role": "user", "content": prompt}], checks=[check])


def _from_records(raw: dict, ctx: _Ctx) -> dict:
    rec = dict(raw)
    if "messages" in rec:
        rec["messages"] = _as_list(rec["messages"])
    elif isinstance(rec.get("prompt"), list):
        rec["messages"] = _messages(rec.pop("prompt"), ctx, "prompt")
    elif "prompt" in rec:
        rec["messages"] = [{"role": "user", "content": ctx.text(rec, "prompt")}]
        del rec["prompt"]
    rec["family"] = _family(raw, ctx)
    rec["id"] = _record_id(raw, rec["family"], ctx)
    rec["checks"] = _as_list(rec.get("checks", []))
    return rec


_CONVERTERS: dict[str, Callable[[dict, _Ctx], dict]] = {
    "messages": _from_messages, "alpaca": _from_alpaca, "prompt": _from_prompt,
    "gsm8k": _from_gsm8k, "ifeval": _from_ifeval, "records": _from_records,
}
