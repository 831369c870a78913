"""An evaluation's protocol key (issue 15 point 5): evaluations whose numbers were produced differently
never share a line on a chart.

The key is the first 8 hex digits of the sha256 of the protocol's fields that change what is measured,
as sorted JSON: samples per problem (k / n), temperature, top-p, the response limit, the chat template
(name and hash), the verifier and estimators versions, the number of problems and the inference dtype.
Fields that do not (the seed, the checkpoint's path, how many rollouts were logged, the sandbox record,
the bootstrap's settings, which k values were reported) are left out; a field that is absent is absent
from the hash, so old evaluations keep one key among themselves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

PROTOCOL_KEY_FIELDS = (
    "k",
    "n",
    "temperature",
    "top_p",
    "max_new_tokens",
    "max_length",
    "chat_template",
    "chat_template_sha256",
    "verifier",
    "estimators",
    "problems",
    "dtype",
)


def protocol_key(protocol: Mapping[str, Any] | None) -> str:
    """8 hex digits naming the protocol (module docstring)."""
    p = protocol if isinstance(protocol, Mapping) else {}
    fields = {f: p[f] for f in PROTOCOL_KEY_FIELDS if f in p}
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]
