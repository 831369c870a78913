"""Streaming readers: each yields (row number, record or error message) without loading the file.

Row numbers are what a person finds in an editor: 1-based lines for JSONL and CSV (the CSV header is
line 1, so the first record is line 2), 1-based positions in the array for JSON, 1-based rows for
Parquet.

Memory stays bounded whatever the file holds (issue 11): no record is ever read or decoded beyond
MAX_RECORD_BYTES, JSON never nests beyond MAX_DEPTH before it reaches a recursive parser, and a
Parquet file's decompressed sizes are checked from its metadata before any page is read, then read a
bounded slice of rows at a time (dictionary-encoded values stay encoded until their rows are
converted, so a small dictionary shared by many rows cannot expand a whole batch at once)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

FORMATS = ("jsonl", "json", "csv", "parquet")

MAX_DEPTH = 64  # nesting of one record (the record itself is level 1), as everywhere JSON is stored
MAX_RECORD_BYTES = 4 << 20  # one JSONL line, JSON array item, CSV record or decoded Parquet row
MAX_COLUMN_CHUNK_BYTES = 128 << 20  # one Parquet column chunk decompressed (its metadata says)
MAX_DECODED_BYTES = 8 << 30  # a whole Parquet file decompressed (ditto)
MAX_FOOTER_BYTES = 16 << 20  # Parquet metadata (parsed whole by pyarrow)
MAX_PAGE_BYTES = 64 << 20  # one Parquet page decompressed (its header says; read before pyarrow)
MAX_PAGE_HEADER_BYTES = 1 << 20  # a page header (statistics included)
# Values (list elements included) in one Parquet column chunk, counted from the page headers: pyarrow
# decodes a record's repetition and definition levels whole, and a few bytes of run-length encoding
# can stand for billions of null elements in one row (~16 bytes of decoding memory each).
MAX_CHUNK_VALUES = 16_000_000
MAX_CSV_COLUMNS = 1000
PARQUET_SLICE_BYTES = 32 << 20  # decoded rows turned into Python objects at once
PARQUET_BATCH_BYTES = 64 << 20  # estimated decoded bytes of one Arrow batch
READ_CHUNK = 1 << 20


class FileError(Exception):
    """The file as a whole cannot be read (wrong format, not JSON at all, unreadable Parquet)."""


class JsonTooDeep(ValueError):
    pass


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


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


# --- JSON text ---------------------------------------------------------------------------------

_BLANK = object()
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings, without parsing (for text orjson refused)."""
    depth = deepest = 0
    for ch in _BRACKETS.findall(_JSON_STRINGS.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(raw: bytes):
    """One JSON text -> its value, _BLANK for whitespace, or a ParseError (a message). Raises
    JsonTooDeep. orjson parses valid text straight from its bytes (several times faster than decode
    + json) and refuses nesting beyond 1024; what it refuses (bad JSON, bad UTF-8, NaN, a blank,
    deep nesting...) takes the standard library's path, which decides and words the error, after a
    nesting check: its parser recurses once per level."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as exc:
        return ParseError(f"bad encoding: not UTF-8 ({exc.reason} at byte {exc.start})")
    if not text.strip():
        return _BLANK
    if _nesting(text) > MAX_DEPTH:
        raise JsonTooDeep(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return ParseError(f"invalid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:  # unbalanced text the nesting check could not see
        raise JsonTooDeep(f"nested deeper than {MAX_DEPTH} levels") from None


class ParseError(str):
    """An error message where a value was expected."""


def _parsed(raw: bytes):
    """A record, or an error message (str): a record that is itself a JSON string is an error."""
    try:
        value = parse_json(raw)
    except JsonTooDeep as exc:
        return str(exc)
    if type(value) is str:
        return "not an object (got str)"
    return str(value) if isinstance(value, ParseError) else value


def _jsonl(f):
    line_no = 0
    while raw := f.readline(MAX_RECORD_BYTES + 1):
        line_no += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                raw = f.readline(READ_CHUNK)
            yield line_no, f"line larger than {_mb(MAX_RECORD_BYTES)} (the limit for one record)"
            continue
        record = _parsed(raw)
        if record is not _BLANK:
            yield line_no, record


class _ArraySplitter:
    """Cuts a top-level JSON array into its items' bytes without parsing them: a scan for brackets,
    quotes and commas (regular expressions, so in C) that tracks nesting, so each item is parsed on
    its own, no larger than MAX_RECORD_BYTES, and never nested beyond MAX_DEPTH."""

    _STRUCT = re.compile(rb'[\[\]{}",]')
    _IN_STRING = re.compile(rb'["\\]')

    def __init__(self, f):
        self.f = f
        self.buf = bytearray()
        self.eof = False

    def _more(self, keep_from: int) -> int:
        """Read a chunk, dropping the bytes before keep_from; returns how far positions moved."""
        if self.eof:
            return -1
        del self.buf[:keep_from]
        data = self.f.read(READ_CHUNK)
        if not data:
            self.eof = True
        self.buf += data
        return keep_from

    def items(self):
        while True:  # leading whitespace, dropped as it is read
            self.buf = bytearray(self.buf.lstrip())
            if self.buf or self._more(0) < 0:
                break
        if not self.buf:
            raise FileError("the file is empty")
        if self.buf[:1] != b"[":
            raise FileError(
                "a .json file must hold one array of records (use .jsonl for one record per line)"
            )
        pos, n = 1, 0
        while True:
            # between items: whitespace, then an item, or the array's end
            while True:
                while pos < len(self.buf) and self.buf[pos] in b" \t\r\n":
                    pos += 1
                if pos < len(self.buf) or self._more(pos) < 0:
                    break
                pos = 0
            if pos >= len(self.buf):
                yield n + 1, f"invalid JSON: the file ends inside the array, after record {n}"
                return
            if self.buf[pos : pos + 1] == b"]" and n == 0:
                yield from self._after_end(pos + 1, n)
                return
            start, end, stop = yield from self._item(pos, n + 1)
            if end is None:
                return
            n += 1
            raw = bytes(self.buf[start:end]).strip()
            if not raw:
                yield n, "invalid JSON: an empty item (two commas, or a comma before ']')"
                return
            yield n, _parsed(raw)
            if stop == b"]":
                yield from self._after_end(end + 1, n)
                return
            pos = end + 1

    def _item(self, pos: int, n: int):
        """Scan one item from pos: (start, end, b',' or b']'), or (.., None, ..) after an error."""
        start, depth, in_string = pos, 0, False
        while True:
            if pos - start > MAX_RECORD_BYTES:
                yield n, f"record larger than {_mb(MAX_RECORD_BYTES)} (the limit for one record)"
                return start, None, None
            m = (self._IN_STRING if in_string else self._STRUCT).search(self.buf, pos)
            if m is None or (in_string and m.group() == b"\\" and m.end() >= len(self.buf)):
                pos = len(self.buf) if m is None else m.start()
                moved = self._more(start)
                if moved < 0:
                    yield n, f"invalid JSON: the file ends inside record {n}"
                    return start, None, None
                start, pos = start - moved, pos - moved
                continue
            ch, pos = m.group(), m.end()
            if in_string:
                if ch == b"\\":
                    pos += 1  # the escaped character, whatever it is
                else:
                    in_string = False
            elif ch == b'"':
                in_string = True
            elif ch in (b"[", b"{"):
                depth += 1
                if depth > MAX_DEPTH:
                    yield n, f"nested deeper than {MAX_DEPTH} levels"
                    return start, None, None
            elif depth == 0 and ch in (b",", b"]"):
                return start, pos - 1, ch
            elif ch in (b"]", b"}"):
                depth -= 1
                if depth < 0:
                    yield n, "invalid JSON: unbalanced brackets"
                    return start, None, None

    def _after_end(self, pos: int, n: int):
        """Only whitespace may follow the array."""
        while True:
            if bytes(self.buf[pos:]).strip():
                yield n + 1, "invalid JSON: content after the end of the array"
                return
            if self._more(len(self.buf)) < 0:
                return
            pos = 0


def _json(f):
    return _ArraySplitter(f).items()


# --- CSV ---------------------------------------------------------------------------------------


class _CappedLines:
    """The text's lines for the csv module, each record (which may span lines) capped: the csv
    module reads a whole line before it looks at it."""

    def __init__(self, text: io.TextIOBase):
        self.text = text
        self.since_record = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_RECORD_BYTES + 1)
        if not line:
            raise StopIteration
        self.since_record += len(line)
        if self.since_record > MAX_RECORD_BYTES:
            raise _RecordTooLarge
        return line


class _RecordTooLarge(Exception):
    pass


def _csv(f):
    if not f.read(1):
        raise FileError("the file is empty")
    f.seek(0)
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    lines = _CappedLines(text)
    reader = None
    try:
        reader = csv.DictReader(lines)
        header = reader.fieldnames
        if not header:
            raise FileError("the CSV file has no header row")
        if len(header) > MAX_CSV_COLUMNS:
            raise FileError(f"the CSV header has {len(header)} columns (at most {MAX_CSV_COLUMNS})")
        lines.since_record = 0
        for record in reader:
            lines.since_record = 0
            row: dict = {}
            try:
                for key, value in record.items():
                    if key is None:
                        yield reader.line_num, "more values than header columns"
                        break
                    row[key] = (
                        _maybe_json(value) if key in ("chosen", "rejected", "metadata", "tests") else value
                    )
                else:
                    yield reader.line_num, row
            except JsonTooDeep as exc:
                yield reader.line_num, f"{key}: {exc}"
    except UnicodeDecodeError as exc:
        yield (reader.line_num + 1 if reader else 1), f"bad encoding: not UTF-8 ({exc.reason})"
    except csv.Error as exc:
        yield (reader.line_num if reader else 1), f"malformed CSV: {exc}"
    except _RecordTooLarge:
        yield (
            (reader.line_num + 1 if reader else 1),
            (f"record larger than {_mb(MAX_RECORD_BYTES)} (the limit for one record)"),
        )


def _maybe_json(value):
    """Conversations and metadata arrive JSON-encoded inside CSV cells (raises JsonTooDeep)."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        parsed = parse_json(value)
        return value if isinstance(parsed, ParseError) or parsed is _BLANK else parsed
    return value


# --- Parquet -----------------------------------------------------------------------------------


def _parquet(f):
    import pyarrow.parquet as pq

    _check_parquet_frame(f)
    try:
        pf = pq.ParquetFile(
            f, thrift_string_size_limit=MAX_FOOTER_BYTES, thrift_container_size_limit=1_000_000
        )
        meta = pf.metadata
        schema = pf.schema_arrow
    except Exception as exc:
        raise FileError(f"not a readable Parquet file: {exc}") from None
    _check_parquet_sizes(meta)
    _check_parquet_pages(f, meta)
    if _type_depth_of(schema) > MAX_DEPTH:
        raise FileError(f"Parquet columns nested deeper than {MAX_DEPTH} levels")
    text_columns = [
        c.path
        for c in pf.schema
        if c.physical_type == "BYTE_ARRAY" and c.converted_type in ("UTF8", "NONE", "ENUM", "JSON")
    ]
    try:  # text stays dictionary-encoded in Arrow until its rows are converted
        f.seek(0)
        pf = pq.ParquetFile(f, read_dictionary=text_columns, buffer_size=READ_CHUNK, pre_buffer=False)
    except Exception:
        f.seek(0)
        pf = pq.ParquetFile(f, buffer_size=READ_CHUNK, pre_buffer=False)
    row = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows <= 0:
            continue
        estimate = sum(
            group.column(c).total_uncompressed_size + 8 * group.column(c).num_values
            for c in range(group.num_columns)
        )
        batch_rows = max(1, min(8192, PARQUET_BATCH_BYTES * group.num_rows // max(1, estimate)))
        batches = pf.iter_batches(batch_size=batch_rows, row_groups=[g], use_threads=False)
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:
                raise FileError(f"unreadable Parquet data in row group {g + 1}: {exc}") from None
            if batch is None:
                break
            yield from _batch_records(batch, row)
            row += batch.num_rows


def _check_parquet_frame(f) -> None:
    """The magic at both ends and a footer of sane length, before pyarrow parses anything."""
    size = f.seek(0, io.SEEK_END)
    if size == 0:
        raise FileError("the file is empty")
    f.seek(0)
    head = f.read(4)
    f.seek(max(0, size - 8))
    tail = f.read(8)
    f.seek(0)
    if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1":
        raise FileError("not a Parquet file: it must start and end with the magic bytes PAR1")
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12:
        raise FileError("not a readable Parquet file: its footer is longer than the file (truncated?)")
    if footer > MAX_FOOTER_BYTES:
        raise FileError(f"Parquet metadata of {_mb(footer)} (at most {_mb(MAX_FOOTER_BYTES)})")


def _check_parquet_sizes(meta) -> None:
    """Decompressed sizes as the metadata gives them, checked before any page is read: a few KB of
    compressed file can hold a cell of hundreds of MB."""
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            size = col.total_uncompressed_size
            if size > MAX_COLUMN_CHUNK_BYTES:
                raise FileError(
                    f"column {col.path_in_schema} in row group {g + 1} decompresses to {_mb(size)}; the limit "
                    f"is {_mb(MAX_COLUMN_CHUNK_BYTES)} a column chunk (write the file with smaller row groups)"
                )
            total += size
    if total > MAX_DECODED_BYTES:
        raise FileError(f"the file decompresses to {_mb(total)}; the limit is {_mb(MAX_DECODED_BYTES)}")


def _check_parquet_pages(f, meta) -> None:
    """Every page's decompressed size and value count from its own header, before pyarrow reads it: pyarrow
    allocates what a page header says (up to 2 GB a page) whatever the footer claims, so a file
    whose footer understates its chunks would otherwise decompress a huge page. Headers are a few
    hundred bytes; walking them reads nothing else."""
    size = f.seek(0, io.SEEK_END)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            pos = (
                col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else None
            )
            pos = pos if pos is not None else col.data_page_offset
            end = pos + col.total_compressed_size
            if pos < 4 or end > size:
                raise FileError(f"column {col.path_in_schema} in row group {g + 1} lies outside the file")
            values = 0
            while pos < end:
                f.seek(pos)
                head = f.read(min(MAX_PAGE_HEADER_BYTES, end - pos))
                try:
                    length, fields = _thrift_struct(head, 0, _PAGE_HEADER_FIELDS)
                except (IndexError, ValueError, RecursionError):
                    raise FileError(
                        f"not a readable Parquet file: bad page header in column {col.path_in_schema}"
                    ) from None
                uncompressed, compressed = fields.get(2, -1), fields.get(3, -1)
                if uncompressed < 0 or compressed < 0:
                    raise FileError(
                        f"not a readable Parquet file: bad page header in column {col.path_in_schema}"
                    )
                if uncompressed > MAX_PAGE_BYTES:
                    raise FileError(
                        f"a page of column {col.path_in_schema} in row group {g + 1} decompresses to "
                        f"{_mb(uncompressed)}; the limit is {_mb(MAX_PAGE_BYTES)} a page"
                    )
                values += max((fields.get(k, {}).get(1, 0) for k in (5, 7, 8)), default=0)
                if values > MAX_CHUNK_VALUES:
                    raise FileError(
                        f"column {col.path_in_schema} in row group {g + 1} holds more than {MAX_CHUNK_VALUES:,} "
                        "values (write the file with smaller row groups)"
                    )
                pos += length + compressed
    f.seek(0)


# PageHeader: 2 uncompressed_page_size, 3 compressed_page_size; the num_values (field 1) of
# 5 DataPageHeader, 7 DictionaryPageHeader, 8 DataPageHeaderV2.
_PAGE_HEADER_FIELDS = {2: None, 3: None, 5: {1: None}, 7: {1: None}, 8: {1: None}}


def _varint(b: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _thrift_skip(b: bytes, i: int, t: int, in_container: bool = False) -> int:
    """Skip one value of Thrift compact type t (the encoding of Parquet's page headers)."""
    if t in (1, 2):  # booleans: in the field header, or a byte inside lists
        return i + 1 if in_container else i
    if t == 3:
        return i + 1
    if t in (4, 5, 6):
        return _varint(b, i)[1]
    if t == 7:
        return i + 8
    if t == 8:
        n, i = _varint(b, i)
        return i + n
    if t in (9, 10):
        head = b[i]
        i += 1
        n, et = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        for _ in range(n):
            i = _thrift_skip(b, i, et, True)
            if i > len(b):
                raise IndexError
        return i
    if t == 11:
        n, i = _varint(b, i)
        if n:
            kinds = b[i]
            i += 1
            for _ in range(n):
                i = _thrift_skip(b, _thrift_skip(b, i, kinds >> 4, True), kinds & 0x0F, True)
                if i > len(b):
                    raise IndexError
        return i
    if t == 12:
        return _thrift_struct(b, i, {})[0]
    raise ValueError(f"unknown Thrift type {t}")


def _thrift_struct(b: bytes, i: int, wanted: dict) -> tuple[int, dict]:
    """(end, {field id: value}) of a compact-protocol struct starting at i, keeping the wanted
    fields: ``wanted`` maps an integer field's id to None, a struct field's id to its own wanted."""
    found: dict = {}
    field_id = 0
    while True:
        head = b[i]
        i += 1
        if head == 0:
            return i, found
        t, delta = head & 0x0F, head >> 4
        if delta:
            field_id += delta
        else:
            raw, i = _varint(b, i)
            field_id = _zigzag(raw)
        if field_id in wanted and wanted[field_id] is None and t in (4, 5, 6):
            raw, i = _varint(b, i)
            found[field_id] = _zigzag(raw)
        elif field_id in wanted and wanted[field_id] is not None and t == 12:
            i, found[field_id] = _thrift_struct(b, i, wanted[field_id])
        else:
            i = _thrift_skip(b, i, t)
        if i > len(b):
            raise IndexError


def _type_depth_of(schema) -> int:
    return max((_type_depth(field.type) for field in schema), default=0)


def _type_depth(t) -> int:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _type_depth(t.value_type)
    if pa.types.is_struct(t):
        return 1 + max((_type_depth(t.field(i).type) for i in range(t.num_fields)), default=0)
    if pa.types.is_map(t):
        return 1 + max(_type_depth(t.key_type), _type_depth(t.item_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return 1 + _type_depth(t.value_type)
    return 0


def _batch_records(batch, row: int):
    """A batch's rows as Python records, a slice of at most PARQUET_SLICE_BYTES decoded at a time;
    a row beyond MAX_RECORD_BYTES is an error, never decoded."""
    sizes = _row_sizes(batch)
    n, i = batch.num_rows, 0
    while i < n:
        if sizes[i] > MAX_RECORD_BYTES:
            yield (
                row + i + 1,
                f"row decodes to {_mb(int(sizes[i]))}, larger than the limit for one record ({_mb(MAX_RECORD_BYTES)})",
            )
            i += 1
            continue
        j, acc = i + 1, int(sizes[i])
        while j < n and sizes[j] <= MAX_RECORD_BYTES and acc + sizes[j] <= PARQUET_SLICE_BYTES:
            acc += int(sizes[j])
            j += 1
        try:
            records = batch.slice(i, j - i).to_pylist()
        except Exception as exc:
            raise FileError(f"unreadable Parquet data at row {row + i + 1}: {exc}") from None
        for k, record in enumerate(records):
            yield row + i + k + 1, record
        i = j


_OBJECT = 64  # bytes of a Python object beyond its payload, roughly


def _row_sizes(batch):
    import numpy as np

    total = np.full(batch.num_rows, 2 * _OBJECT, dtype=np.int64)
    for column in batch.columns:
        total += _value_sizes(column)
    return total


def _value_sizes(arr):
    """Decoded bytes of each value of an Arrow array (with a Python object's overhead), computed
    from lengths and offsets without decoding any value: dictionary values count once per use."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t, n = arr.type, len(arr)
    if pa.types.is_dictionary(t):
        values = _value_sizes(arr.dictionary)
        if not len(values):
            return np.full(n, _OBJECT, dtype=np.int64)
        return values[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + _OBJECT
    if pa.types.is_fixed_size_binary(t):
        return np.full(n, t.byte_width + _OBJECT, dtype=np.int64)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        child = np.concatenate([[0], np.cumsum(_value_sizes(arr.values))])
        offsets = arr.offsets.to_numpy(zero_copy_only=False)
        return child[offsets[1:]] - child[offsets[:-1]] + _OBJECT
    if pa.types.is_fixed_size_list(t):
        k = t.list_size
        child = _value_sizes(arr.values)[arr.offset * k : (arr.offset + n) * k]
        return child.reshape(n, k).sum(axis=1) + _OBJECT if k else np.full(n, _OBJECT, dtype=np.int64)
    if pa.types.is_struct(t):
        total = np.full(n, _OBJECT, dtype=np.int64)
        for child in arr.flatten():
            total += _value_sizes(child)
        return total
    return np.full(n, _OBJECT, dtype=np.int64)
