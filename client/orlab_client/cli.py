"""``orlab-client sync``: send what training scripts spooled while orlab was unreachable.
``orlab-client import-tb LOGDIR --project P``: import TensorBoard event files (orlab_client.tb_import)."""

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
    tb = sub.add_parser("import-tb", help="import TensorBoard event files: one run per run directory")
    tb.add_argument("logdir")
    tb.add_argument("--project", default=None, help="an id or a name (default: $ORLAB_PROJECT)")
    tb.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        client = Client(args.url, args.token, spool_dir=args.spool_dir)
    except ValueError as exc:
        print(f"orlab-client: {exc}", file=sys.stderr)
        return 2
    if args.command == "import-tb":
        return _import_tb(client, args)
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


def _import_tb(client: Client, args) -> int:
    import os

    from orlab_client.sdk import resolve_project
    from orlab_client.tb_import import import_logdir

    try:
        project = resolve_project(client, args.project or os.environ.get("ORLAB_PROJECT"))
        results = import_logdir(client, args.logdir, project, progress=not args.no_progress)
    except (ValueError, OrlabError) as exc:
        print(f"orlab-client: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, OrlabError) else 2
    except Unreachable as exc:
        print(
            f"orlab-client: server unreachable (re-run the import; it is idempotent): {exc}", file=sys.stderr
        )
        return 1
    points = sum(r.points for r in results)
    samples = sum(r.samples for r in results)
    print(f"imported {len(results)} runs: {points} points, {samples} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
