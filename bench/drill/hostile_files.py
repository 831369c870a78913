"""Upload files the drill sends: hostile ones (the findings of issue 11) and two valid ones for
comparison. Each is small on the wire and expensive to parse naively."""

from __future__ import annotations

import json
import os
from pathlib import Path


def pairs(n: int, start: int = 0):
    for i in range(start, start + n):
        yield {"prompt": f"question {i}?", "chosen": f"a good answer {i}", "rejected": f"bad {i}"}


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def build(folder: Path) -> list[tuple[str, Path]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out: list[tuple[str, Path]] = []
    out.append(("valid JSONL, 1,000 pairs", write_jsonl(folder / "valid-small.jsonl", pairs(1000))))
    out.append(
        (
            "valid JSONL, 12 MB (background import)",
            write_jsonl(folder / "valid-big.jsonl", pairs(170_000, 1000)),
        )
    )

    deep = folder / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # 200 KB, 100,000 levels
    out.append(("deeply nested .json (200 KB, depth 100,000)", deep))

    deep_line = folder / "deep-line.jsonl"
    with open(deep_line, "w") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
        f.write('{"prompt": ' + "[" * 50_000 + "]" * 50_000 + ', "chosen": "c", "rejected": "r"}\n')
    out.append(("JSONL line nested 50,000 deep", deep_line))

    long_line = write_jsonl(
        folder / "long-line.jsonl", [{"prompt": "p", "chosen": "x" * 30_000_000, "rejected": "r"}]
    )
    out.append(("JSONL with one 30 MB string", long_line))

    wide = folder / "wide.csv"
    wide.write_text(
        ",".join(f"c{i}" for i in range(200_000)) + "\n" + ",".join("1" for _ in range(200_000)) + "\n"
    )
    out.append(("CSV with 200,000 columns", wide))

    cell = folder / "huge-cell.parquet"
    table = pa.table({"prompt": ["p"], "chosen": ["a" * 300_000_000], "rejected": ["r"]})
    pq.write_table(table, cell, compression="zstd", compression_level=3, use_dictionary=False)
    del table
    out.append(("Parquet with a 300 MB cell", cell))

    bomb = folder / "dictionary-bomb.parquet"
    # one 1 MB string referenced by 1,500 rows: a few KB on disk, 1.5 GB when decoded row by row
    chosen = pa.DictionaryArray.from_arrays(pa.array([0] * 1500, pa.int32()), pa.array(["b" * 2**20]))
    small = pa.array(["p"] * 1500)
    pq.write_table(pa.table({"prompt": small, "chosen": chosen, "rejected": small}), bomb, compression="zstd")
    out.append(("Parquet dictionary bomb (1 MB value x 1,500 rows)", bomb))

    many = folder / "many-groups.parquet"
    rows = list(pairs(20_000))
    pq.write_table(pa.Table.from_pylist(rows), many, row_group_size=10)
    out.append(("Parquet with 2,000 row groups", many))

    junk = folder / "junk.parquet"
    junk.write_bytes(b"PAR1" + os.urandom(64 * 1024) + b"PAR1")
    out.append(("random bytes named .parquet", junk))

    cut = folder / "truncated.parquet"
    cut.write_bytes(many.read_bytes()[: many.stat().st_size // 2])
    out.append(("truncated Parquet", cut))

    bad_utf8 = folder / "bad-utf8.jsonl"
    bad_utf8.write_bytes(b'{"prompt": "p\xff\xfe", "chosen": "c", "rejected": "r"}\n')
    out.append(("JSONL with invalid UTF-8", bad_utf8))
    return out
