"""Checkpoint downloads (issue 16 point 8): a checkpoint directory as a tar (or tar.gz) archive,
generated while it is sent.

Which files: by default the **model** only, decided by file name (the base name, any folder but
``deepspeed/``):

- weights: ``*.safetensors``, ``*.safetensors.index.json``, ``pytorch_model*.bin``,
  ``pytorch_model.bin.index.json``, ``*.gguf``;
- config: ``config.json``, ``generation_config.json``, ``adapter_config.json``, ``value_head.json``
  (a value model's head), ``preprocessor_config.json``;
- tokenizer: ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
  ``added_tokens.json``, ``vocab.json``, ``vocab.txt``, ``merges.txt``, ``chat_template.json``,
  ``chat_template.jinja``, ``tokenizer.model``, ``spiece.model``, ``sentencepiece.bpe.model``.

So a DAPO checkpoint's ``critic/`` (a second save_pretrained model) is in, and ``optimizer.pt``,
``trainer_state.json``, ``state.json``, ``orlab.json``, RNG and scheduler files and everything under
``deepspeed/`` (ZeRO partitions, which hold the optimizer state) are not. ``?include=optimizer`` sends
the whole directory: model, optimizer and scheduler state, trainer bookkeeping, anything else.

Which directories: the ones the platform wrote in the artifact store for the checkpoint's own run
(webapp.runs.checkpoint_paths: ``runs/<id>/attempt-<n>/checkpoint-<step>``) or an external run's
upload (``runs/<id>/uploads/checkpoint-<step>``, written by webapp.runs.checkpoint_upload); resolved,
never through a symlink. Inside, symlinks are neither followed nor sent (a link out of the store must
not carry files out), and each file is opened with O_NOFOLLOW. A checkpoint the retention policy
deleted is refused with its reason.

Memory: the archive is never built. Each file's tar header is written, then the file in 1 MiB reads,
then its padding (and, for tar.gz, the same bytes through one zlib stream), so a 15 GB checkpoint
costs the server a chunk at a time."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.urls import reverse

from webapp.runs.checkpoint_paths import UntrustedCheckpoint, worker_checkpoint_dir
from webapp.runs.checkpoint_upload import uploads_dir
from webapp.runs.models import Checkpoint

log = logging.getLogger(__name__)

CHUNK = 1 << 20
INCLUDES = ("model", "optimizer")  # ?include=: model files only (default), or the whole directory
ARCHIVES = ("tar", "tar.gz")  # ?archive=
STATE_DIRS = {"deepspeed"}
MODEL_PATTERNS = (
    # weights
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json", "*.gguf",
    # config
    "config.json", "generation_config.json", "adapter_config.json", "value_head.json", "preprocessor_config.json",
    # tokenizer
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "chat_template.json", "chat_template.jinja", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model",
)  # fmt: skip


class DownloadRefused(Exception):
    """Why a checkpoint cannot be downloaded: ``status`` 410 (deleted) or 404 (no trusted files)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Member:
    name: str  # relative to the checkpoint directory, with "/"
    path: Path
    size: int


def is_model_file(relative: str) -> bool:
    """The rule of the module doc, on a path relative to the checkpoint directory."""
    parts = relative.split("/")
    if any(part in STATE_DIRS for part in parts[:-1]):
        return False
    name = parts[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in MODEL_PATTERNS)


def _upload_directory(checkpoint: Checkpoint) -> Path | None:
    """An external run's uploaded checkpoint: ``uploads/checkpoint-<step>`` of its own run, resolved,
    not a symlink."""
    if not checkpoint.path:
        return None
    candidate = Path(checkpoint.path)
    if not candidate.is_absolute() or candidate.is_symlink():
        return None
    try:
        resolved = candidate.resolve(strict=True)
        base = uploads_dir(checkpoint.run_id).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved.parent != base or not resolved.is_dir() or not resolved.name.startswith("checkpoint-"):
        return None
    return resolved


def checkpoint_directory(checkpoint: Checkpoint) -> Path:
    """The checkpoint's trusted directory; DownloadRefused otherwise."""
    if checkpoint.deleted_at is not None:
        raise DownloadRefused(
            410,
            f"checkpoint {checkpoint.pk} (step {checkpoint.step}) was deleted by the run's retention policy "
            f"at {checkpoint.deleted_at.isoformat()}: its files are gone",
        )
    try:
        return worker_checkpoint_dir(checkpoint)
    except UntrustedCheckpoint:
        pass
    directory = _upload_directory(checkpoint)
    if directory is None:
        raise DownloadRefused(
            404,
            f"checkpoint {checkpoint.pk} (step {checkpoint.step}) has no files in the artifact store to "
            "download (its directory is gone, or is not one the platform wrote for this run)",
        )
    return directory


def members(directory: Path, include: str = "model") -> list[Member]:
    """The regular files to send, in a stable order (symlinks and special files left out)."""
    out = []
    for parent, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(parent) / name
            try:
                st = os.lstat(path)
            except OSError:
                continue  # removed while walking
            if not stat.S_ISREG(st.st_mode):
                continue
            relative = path.relative_to(directory).as_posix()
            if include == "optimizer" or is_model_file(relative):
                out.append(Member(relative, path, st.st_size))
    return out


def _url(checkpoint: Checkpoint, include: str, name: str = "checkpoint-download") -> str:
    url = reverse(name, args=[checkpoint.pk])
    return url if include == "model" else f"{url}?include={include}"


def download_choices(checkpoint: Checkpoint) -> list[dict]:
    """What the checkpoints table offers: model files, and everything (with the optimizer state) when
    that is more; each with its bytes and files. [] when the checkpoint cannot be downloaded."""
    try:
        directory = checkpoint_directory(checkpoint)
    except DownloadRefused:
        return []
    everything = members(directory, "optimizer")
    model = [m for m in everything if is_model_file(m.name)]
    choices = []
    if model:
        choices.append(
            {"include": "model", "label": "model", "bytes": sum(m.size for m in model), "files": len(model)}
        )
    if len(everything) > len(model):
        choices.append(
            {
                "include": "optimizer",
                "label": "with optimizer state" if model else "all files",
                "bytes": sum(m.size for m in everything),
                "files": len(everything),
            }
        )
    for choice in choices:
        choice["url"] = _url(checkpoint, choice["include"])
        choice["url_gz"] = choice["url"] + ("&" if "?" in choice["url"] else "?") + "archive=tar.gz"
        choice["api_url"] = _url(checkpoint, choice["include"], "api-checkpoint-download")
    return choices


def archive_name(checkpoint: Checkpoint, include: str, archive: str) -> str:
    suffix = "" if include == "model" else "-full"
    return f"run-{checkpoint.run_id}-checkpoint-{checkpoint.step}{suffix}.{archive}"


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)  # PAX: long names and sizes over 8 GiB


def _tar_blocks(files: list[Member], root: str) -> Iterator[bytes]:
    written = 0
    for member in files:
        try:
            fd = os.open(member.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            log.warning("checkpoint download: %s vanished or became a link; left out", member.path)
            continue
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                continue
            size = st.st_size
            header = _header(f"{root}/{member.name}", size, st.st_mtime)
            yield header
            written += len(header)
            left = size
            while left:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:  # shrank while sent: the header promised `size` bytes, keep the tar valid
                    log.warning("checkpoint download: %s shrank while sent; padded with zeros", member.path)
                    chunk = b"\0" * min(CHUNK, left)
                left -= len(chunk)
                yield chunk
            padding = -size % tarfile.BLOCKSIZE
            if padding:
                yield b"\0" * padding
            written += size + padding
    end = 2 * tarfile.BLOCKSIZE
    end += -(written + end) % tarfile.RECORDSIZE  # what tar itself writes: whole 10 KiB records
    yield b"\0" * end


def stream_archive(checkpoint: Checkpoint, files: list[Member], archive: str = "tar") -> Iterator[bytes]:
    """The archive's bytes, a chunk at a time. Members are under ``run-<id>-checkpoint-<step>/``."""
    root = f"run-{checkpoint.run_id}-checkpoint-{checkpoint.step}"
    if archive == "tar":
        yield from _tar_blocks(files, root)
        return
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    for block in _tar_blocks(files, root):
        out = gzip.compress(block)
        if out:
            yield out
    yield gzip.flush()


def parse_options(query) -> tuple[str, str]:
    """(include, archive) from the query; DownloadOptionsInvalid naming the parameter otherwise."""
    errors = {}
    values = {}
    for name, allowed, default in (("include", INCLUDES, "model"), ("archive", ARCHIVES, "tar")):
        given = query.getlist(name)
        if not given:
            values[name] = default
        elif len(given) > 1 or given[0] not in allowed:
            errors[name] = [f"one of {', '.join(allowed)}, given once"]
        else:
            values[name] = given[0]
    if errors:
        raise DownloadOptionsInvalid(errors)
    return values["include"], values["archive"]


class DownloadOptionsInvalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid query")
        self.errors = errors


def download_response(checkpoint: Checkpoint, include: str, archive: str):
    """The streamed archive (DownloadRefused when the checkpoint has nothing to send)."""
    from django.http import StreamingHttpResponse

    files = members(checkpoint_directory(checkpoint), include)
    if not files:
        raise DownloadRefused(404, f"checkpoint {checkpoint.pk} has no {include} files to download")
    response = StreamingHttpResponse(
        stream_archive(checkpoint, files, archive),
        content_type="application/gzip" if archive == "tar.gz" else "application/x-tar",
    )
    name = archive_name(checkpoint, include, archive)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Orlab-Files"] = str(len(files))
    response["X-Orlab-Content-Bytes"] = str(sum(m.size for m in files))  # before tar framing / gzip
    return response
