"""OTLP/JSON lines: each received export request as one line of OTLP JSON (``TracesData`` shape).

The encoding follows the OTLP specification's JSON mapping: lowerCamelCase field names, enums as
integers, and trace/span ids as hex strings (not the base64 of protobuf's generic JSON mapping).
Files in this form can be replayed to a collector's OTLP/HTTP JSON receiver or read with ``jq``.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["OtlpJsonLinesWriter", "to_otlp_json"]

_ID_FIELDS: Final = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids(node: Any) -> Any:
    """Rewrite base64 ``traceId``/``spanId``/``parentSpanId`` values as hex, recursively."""
    if isinstance(node, dict):
        return {
            key: (
                base64.b64decode(value).hex()
                if key in _ID_FIELDS and isinstance(value, str)
                else _hex_ids(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    return node


def to_otlp_json(message: Message) -> dict[str, Any]:
    """An OTLP message (``ExportTraceServiceRequest``, ``TracesData``, a span) as OTLP JSON."""
    from google.protobuf.json_format import MessageToDict

    return dict(_hex_ids(MessageToDict(message, use_integers_for_enums=True)))


class OtlpJsonLinesWriter:
    """Appends OTLP messages to a file, one JSON document per line, flushed after each write.

    Thread-safe; use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        self.lines = 0

    def write(self, message: Message) -> None:
        """Write ``message`` as one line."""
        line = json.dumps(to_otlp_json(message), separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            if self._file is None:
                raise ValueError(f"{self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> OtlpJsonLinesWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
