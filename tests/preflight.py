"""Fails `make test` early, with a clear message, when PostgreSQL or Redis is not reachable."""

import os
import sys
from urllib.parse import urlparse


def main() -> int:
    db_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    problems = []
    if not db_url.startswith(("postgres://", "postgresql://")):
        problems.append(f"DATABASE_URL must point at PostgreSQL for the tests (got {db_url!r})")
    else:
        import psycopg

        u = urlparse(db_url)
        try:
            psycopg.connect(
                host=u.hostname, port=u.port or 5432, user=u.username, password=u.password,
                dbname="postgres", connect_timeout=5,
            ).close()  # fmt: skip
        except Exception as exc:
            problems.append(
                f"PostgreSQL is not reachable at {u.hostname}:{u.port or 5432} ({exc}).\n"
                "  start it: pg_ctlcluster --skip-systemctl-redirect 15 main start"
            )
    if not broker.startswith("redis://"):
        problems.append(f"CELERY_BROKER_URL must point at Redis for the tests (got {broker!r})")
    else:
        import redis

        try:
            redis.Redis.from_url(broker, socket_connect_timeout=5).ping()
        except Exception as exc:
            problems.append(
                f"Redis is not reachable at {broker} ({exc}).\n"
                '  start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
            )
    for p in problems:
        print(f"make test: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
