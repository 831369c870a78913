"""Streaming readers: each yields (row number, record or error message) without loading the file.

Row numbers are what a person finds in an editor: 1-based lines for JSONL and CSV (the CSV header is
line 1, so the first record is line 2), 1-based positions in the array for JSON, 1-based rows for
Parquet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import orjson

FORMATS = ("jsonl", "json", "csv", "parquet")


class FileError(Exception):
    """The file as a whole cannot be read (wrong format, not JSON at all, unreadable Parquet)."""


def detect_format(filename: str) -> str:
    name = filename.lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"),
                     (".parquet", "parquet"), (".pq", "parquet")):  # fmt: skip
        if name.endswith(ext):
            return fmt
    raise FileError(f"unknown file type {filename!r}: use .jsonl, .json, .csv or .parquet")


class CountingFile(io.RawIOBase):
    """A raw file that counts the bytes read through it: the import's progress, for every format."""

    def __init__(self, path: Path):
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.size = max(1, Path(path).stat().st_size)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self.bytes_read = max(self.bytes_read, self._f.tell())
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()

    @property
    def fraction(self) -> float:
        return min(1.0, self.bytes_read / self.size)


def open_counting(path: Path) -> tuple[CountingFile, io.BufferedReader]:
    raw = CountingFile(path)
    return raw, io.BufferedReader(raw, buffer_size=1 << 20)


def iter_records(f: io.BufferedReader, fmt: str) -> Iterator[tuple[int, dict | str]]:
    """Records of a binary file object opened with open_counting (or any seekable binary file)."""
    return {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}[fmt](f)


def _jsonl(f):
    # orjson parses a valid line straight from its bytes (several times faster than decode + json);
    # anything it refuses (bad JSON, bad UTF-8, a blank line, NaN...) takes the standard library's
    # path, which decides, and words the error, exactly as before.
    fast, refused = orjson.loads, orjson.JSONDecodeError
    for line_no, raw in enumerate(f, start=1):
        try:
            record = fast(raw)
        except refused:
            record = _jsonl_slow(raw)
            if record is _BLANK:
                continue
        yield line_no, record


_BLANK = object()


def _jsonl_slow(raw: bytes):
    """A line orjson refused: the record, an error message, or _BLANK for an empty line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"bad encoding: not UTF-8 ({exc.reason} at byte {exc.start})"
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"


def _json(f):
    import ijson

    head = f.read(4096).lstrip()
    if not head.startswith(b"["):
        raise FileError("a .json file must hold one array of records (use .jsonl for one record per line)")
    f.seek(0)
    n = 0
    try:
        for n, item in enumerate(ijson.items(f, "item", use_float=True), start=1):
            yield n, item
    except ijson.common.IncompleteJSONError as exc:
        yield n + 1, f"invalid JSON after record {n}: {exc}"
    except UnicodeDecodeError as exc:
        yield n + 1, f"bad encoding: not UTF-8 ({exc.reason})"


def _csv(f):
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    reader = None
    try:
        reader = csv.DictReader(text)
        header = reader.fieldnames
        if not header:
            raise FileError("the CSV file has no header row")
        for record in reader:
            row: dict = {}
            for key, value in record.items():
                if key is None:
                    yield reader.line_num, "more values than header columns"
                    break
                row[key] = _maybe_json(value) if key in ("chosen", "rejected", "metadata", "tests") else value
            else:
                yield reader.line_num, row
    except UnicodeDecodeError as exc:
        yield (reader.line_num + 1 if reader else 1), f"bad encoding: not UTF-8 ({exc.reason})"
    except csv.Error as exc:
        yield (reader.line_num if reader else 1), f"malformed CSV: {exc}"


def _maybe_json(value):
    """Conversations and metadata arrive JSON-encoded inside CSV cells."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet(f):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:
        raise FileError(f"not a readable Parquet file: {exc}") from None
    n = 0
    for batch in pf.iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            n += 1
            yield n, record
