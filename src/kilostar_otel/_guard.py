"""The never-raise rule, by name: what every hook into foreign code does with an exception.

A hook (a propagator's inject/extract, a span processor's on_start/on_end, a sampler, a logging
patcher or filter, a middleware's error path) must never break the host application, so it ends in
``except Exception as exc: internal_error(WHERE, exc)`` and carries on with its safe default.
:func:`internal_error` counts the error and logs its type (never its message, which may hold
header content) once per hook at debug level.

With ``KILOSTAR_OTEL_STRICT=1`` in the environment (the project's own tests set it), an error raised
by kilostar-otel's own code is re-raised instead, so a hidden bug in a hook fails a test rather than
vanishing. Errors raised by foreign code the hook called (a hostile carrier, a getter, a user's
callback) are still swallowed: surviving them is the hook's job.

The check lives only in the ``except`` branch: a ``try`` costs nothing while nothing raises, so the
hot paths stay as fast as without it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Final

__all__ = ["STRICT_ENV", "error_counts", "internal_error", "is_strict", "set_strict"]

#: Environment variable that turns on strict mode (``1``, ``true`` or ``yes``).
STRICT_ENV: Final = "KILOSTAR_OTEL_STRICT"

_log = logging.getLogger("kilostar_otel")
_PACKAGE_DIR: Final = str(Path(__file__).resolve().parent)
_lock = threading.Lock()
_counts: dict[str, int] = {}
_logged: set[tuple[str, str]] = set()
_strict = os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def is_strict() -> bool:
    """True when own errors in hooks are re-raised (``KILOSTAR_OTEL_STRICT=1``)."""
    return _strict


def set_strict(strict: bool) -> bool:
    """Turn strict mode on or off; return the previous setting (for tests)."""
    global _strict
    previous, _strict = _strict, bool(strict)
    return previous


def error_counts() -> dict[str, int]:
    """Errors swallowed so far, per hook (a copy)."""
    with _lock:
        return dict(_counts)


def _raised_by_us(exc: BaseException) -> bool:
    """True if the innermost frame of ``exc``'s traceback is kilostar-otel's own code."""
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)
    except (OSError, ValueError):  # pragma: no cover - an unresolvable file name
        return False


def internal_error(where: str, exc: BaseException) -> None:
    """Record an exception a hook is about to swallow; re-raise it in strict mode if it is ours.

    Call it from the ``except`` block, then return the hook's safe default. ``where`` names the
    hook (``"KiloStarSpanProcessor.on_start"``).
    """
    kind = type(exc).__name__
    with _lock:
        _counts[where] = _counts.get(where, 0) + 1
        first = (where, kind) not in _logged
        if first:
            _logged.add((where, kind))
    if first:
        _log.debug("kilostar-otel: %s swallowed %s (logged once)", where, kind)
    if _strict and _raised_by_us(exc):
        raise exc
