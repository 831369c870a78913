"""``orlab-client sync``: send what training scripts spooled while orlab was unreachable."""

from __future__ import annotations

import argparse
import sys

from orlab_client.client import Client, OrlabError, Unreachable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orlab-client")
    parser.add_argument("--url", help="orlab URL (default: $ORLAB_URL)")
    parser.add_argument("--token", help="API token (default: $ORLAB_TOKEN)")
    parser.add_argument("--spool-dir", help="spool folder (default: $ORLAB_SPOOL_DIR or ~/.orlab/spool)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="send spooled records")
    sub.add_parser("status", help="list spooled files")
    args = parser.parse_args(argv)
    try:
        client = Client(args.url, args.token, spool_dir=args.spool_dir)
    except ValueError as exc:
        print(f"orlab-client: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        for path in client.spooled_files():
            print(f"{path}  {len(path.read_text().splitlines())} records")
        return 0
    try:
        result = client.sync()
    except Unreachable as exc:
        print(f"orlab-client: server unreachable, nothing lost (spool kept): {exc}", file=sys.stderr)
        return 1
    except OrlabError as exc:
        print(f"orlab-client: the server refused a record: {exc}", file=sys.stderr)
        return 1
    print(f"sent {result['records']} records from {result['files']} spool files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
