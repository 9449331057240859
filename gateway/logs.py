"""Structured logs: one JSON object per line on stderr (journald keeps them as they are).

Call sites log an event name as the message and put data in `extra={"fields": {...}}`.
Field values are whatever the call site chose; no call site passes key material, and
`redact` guards the one generic path (config/device errors) anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET_NAMES = re.compile(r"(key|password|secret)", re.IGNORECASE)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(redact(fields))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def redact(fields: dict[str, object]) -> dict[str, object]:
    """Replaces the value of any field whose name looks like a secret."""
    return {k: ("<redacted>" if _SECRET_NAMES.search(k) else v) for k, v in fields.items()}


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs every packet at debug; keep it at warning unless asked for.
    logging.getLogger("mqtt").setLevel(max(logging.WARNING, root.level))
