"""An external run's checkpoint directory, uploaded as a tar stream into the artifact store (issue 11).

Why an upload and not a path: a path a user sends would be opened by a worker later (a second team
resumed from the first team's checkpoint that way). The client packs the directory into a tar
archive (gzip allowed) and sends it as the request body; it is read here in chunks, straight from
the request stream to ``<ORLAB_ARTIFACTS>/runs/<id>/uploads/``, never held in memory.

Refused: a body or an unpacked total beyond ``ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES`` (413), member names
that are absolute or climb out with ``..`` or hold NUL/backslashes, links, devices and FIFOs, more
than MAX_MEMBERS members, a malformed archive (400). Nothing half-written: members land in a hidden
staging folder that is renamed into place only once the whole archive was read, and removed on any
failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings

from webapp.errors import ServiceError
from webapp.runs.retention import run_artifact_dir

CHUNK = 1 << 20
#: More members than this is an inode bomb, not a checkpoint.
MAX_MEMBERS = 100_000
UPLOADS = "uploads"
DEFAULT_MAX_BYTES = 20 * 2**30


class UploadRefused(ServiceError):
    """A refused upload: ``status`` 400 or 413, ``field`` the request part to name in the error."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message, {field: [message]})
        self.status, self.field = status, field


@dataclass
class Stored:
    directory: Path
    size_bytes: int
    files: int


def max_bytes() -> int:
    """ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES (a setting, else the environment); default 20 GiB, a 7B model
    in bf16 with its tokenizer."""
    configured = getattr(settings, "ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES", None)
    if configured is None:
        configured = os.environ.get("ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES") or DEFAULT_MAX_BYTES
    return int(float(configured))


def uploads_dir(run_id: int) -> Path:
    return run_artifact_dir(run_id) / UPLOADS


class _Counted:
    """A read-only stream that refuses to read past ``limit`` bytes (the body's size limit, enforced
    while streaming: a missing or lying Content-Length cannot get around it)."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.stream, self.limit, self.read_bytes = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        data = self.stream.read(min(size, self.limit + 1 - self.read_bytes) or 1)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise UploadRefused(413, "body", f"the archive is larger than the limit of {self.limit} bytes")
        return data


def member_problem(name: str) -> str | None:
    """Why a tar member name cannot be written under the checkpoint directory (None when fine)."""
    if not name or "\x00" in name or "\\" in name:
        return "an empty name, or one with NUL characters or backslashes"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a path that climbs out with '..'"
    return None


def store_checkpoint_upload(run_id: int, step: int, stream: IO[bytes], content_length: int | None) -> Stored:
    """Unpack the tar archive read from ``stream`` into the run's uploads folder as the directory of
    checkpoint ``step`` (replacing an earlier upload of that step). Raises UploadRefused."""
    limit = max_bytes()
    if content_length is not None and content_length > limit:
        raise UploadRefused(413, "body", f"the archive is larger than the limit of {limit} bytes")
    base = uploads_dir(run_id)
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".incoming-{secrets.token_hex(8)}"
    staging.mkdir()
    try:
        size, files = _unpack(_Counted(stream, limit), staging, limit)
        target = base / f"checkpoint-{step:08d}"
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Stored(directory=target, size_bytes=size, files=files)


def _unpack(stream: _Counted, staging: Path, limit: int) -> tuple[int, int]:
    total = files = 0
    try:
        # "r|*": a forward-only stream (no seeking back into the request body), gzip/bz2/xz detected
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise UploadRefused(400, "body", f"more than {MAX_MEMBERS} members in the archive")
                name = member.name.removeprefix("./").rstrip("/")
                if name in ("", "."):
                    continue  # the archive's root folder itself
                if problem := member_problem(name):
                    raise UploadRefused(400, "body", f"member {member.name!r} refused: {problem}")
                destination = staging / name
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise UploadRefused(
                        400, "body", f"member {member.name!r} refused: only files and folders are accepted"
                    )
                total += member.size
                if total > limit:
                    raise UploadRefused(413, "body", f"the unpacked files exceed the limit of {limit} bytes")
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                # O_NOFOLLOW: never write through a link (none can exist here: links are refused)
                fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                files += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        # no exception text: an OSError's names the folder in the artifact store
        raise UploadRefused(
            400, "body", "not a readable tar archive (or a member clashes with another)"
        ) from None
    if files == 0:
        raise UploadRefused(400, "body", "the archive holds no files")
    return total, files


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete staging folder to ``target``; an earlier upload of the step is moved aside
    first and removed after (a reader sees the old directory or the new one, never a mix). Two
    uploads of one step at once: the rename that loses moves the winner aside and tries again (the
    last one stays)."""
    for _ in range(5):
        old = None
        if target.exists():
            old = target.with_name(f".replaced-{secrets.token_hex(8)}")
            with contextlib.suppress(FileNotFoundError):  # another upload moved it first
                os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another upload renamed its folder in between
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    raise UploadRefused(409, "step", "another upload of this step kept replacing it; try again")
