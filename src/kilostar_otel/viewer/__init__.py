"""Seeing traces locally: an embedded OTLP receiver (gRPC and HTTP) for the demo, serve, tests.

``from kilostar_otel.viewer import OtlpReceiver`` loads gRPC and the OTLP protobufs on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kilostar_otel.viewer.receiver import OtlpReceiver, ReceivedSpan

__all__ = ["OtlpReceiver", "ReceivedSpan"]


def __getattr__(name: str) -> Any:
    # The receiver needs grpcio and the OTLP protobufs: load them only when they are asked for.
    if name in __all__:
        from kilostar_otel.viewer import receiver

        return getattr(receiver, name)
    raise AttributeError(f"module 'kilostar_otel.viewer' has no attribute {name!r}")
