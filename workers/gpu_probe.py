"""The GPUs a worker's processes can see, with their memory, read through NVML.

Why NVML and not torch.cuda: ``torch.cuda.mem_get_info`` creates a CUDA context in the worker's main
process, which holds ~0.5 GB on every GPU for the worker's lifetime and makes every prefork child
forked after it unable to use CUDA ("Cannot re-initialize CUDA in forked subprocess"). NVML, the
driver's management library (libnvidia-ml.so.1, installed with every NVIDIA driver), needs no
context; ``torch.cuda.device_count`` uses it for the same reason. Only the C functions that have been
stable since NVML's first versions are called, through ctypes (no extra package).

``CUDA_VISIBLE_DEVICES`` is honoured as CUDA reads it: ordinals or GPU-<uuid> prefixes, in the given
order, stopping at the first invalid entry; a repeated entry hides every GPU."""

from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import Any

_NAME_LEN = 96
_lock = threading.Lock()
_nvml: Any = None  # the loaded library once nvmlInit succeeded; False when it cannot be used


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _library():
    """libnvidia-ml, initialised once per process (None without an NVIDIA driver)."""
    global _nvml
    with _lock:
        if _nvml is None:
            try:
                lib = ctypes.CDLL("libnvidia-ml.so.1")
                _nvml = lib if lib.nvmlInit_v2() == 0 else False
            except (OSError, AttributeError):
                _nvml = False
        return _nvml or None


def visible_order(env: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs CUDA exposes, in CUDA's order, for ``CUDA_VISIBLE_DEVICES`` = ``env``
    (None: all of them) on a host whose GPUs have ``uuids`` (NVML order)."""
    if env is None:
        return list(range(len(uuids)))
    order: list[int] = []
    for item in (e.strip() for e in env.split(",")):
        if item.startswith("GPU-"):
            matches = [i for i, u in enumerate(uuids) if u.startswith(item)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            digits = re.match(r"\+?\d+", item)  # like strtoul: "1gpu" is 1, "-1" ends the list
            if digits is None:
                break
            index = int(digits.group())
            if index >= len(uuids):
                break
        if index in order:
            return []
        order.append(index)
    return order


def gpus() -> tuple[list[dict[str, Any]], list[str]]:
    """([{index, name, total_bytes, free_bytes}] in CUDA's numbering, notes). Empty without a driver."""
    nvml = _library()
    if nvml is None:
        return [], []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip().startswith("MIG-"):
        return [], ["CUDA_VISIBLE_DEVICES names MIG instances: their memory is not reported"]
    count = ctypes.c_uint(0)
    if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
        return [], ["NVML could not count the GPUs"]
    devices = []
    for i in range(count.value):
        handle = ctypes.c_void_p()
        name = ctypes.create_string_buffer(_NAME_LEN)
        uuid = ctypes.create_string_buffer(_NAME_LEN)
        memory = _Memory()
        if (
            nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0
            or nvml.nvmlDeviceGetName(handle, name, _NAME_LEN) != 0
            or nvml.nvmlDeviceGetUUID(handle, uuid, _NAME_LEN) != 0
            or nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0
        ):
            return [], [f"NVML could not read GPU {i}"]
        devices.append(
            {
                "name": name.value.decode(errors="replace"),
                "uuid": uuid.value.decode(errors="replace"),
                "total_bytes": int(memory.total),
                "free_bytes": int(memory.free),
            }
        )
    order = visible_order(env, [d["uuid"] for d in devices])
    return [
        {"index": k, **{key: devices[i][key] for key in ("name", "total_bytes", "free_bytes")}}
        for k, i in enumerate(order)
    ], []
