"""Optional integrations, one module each, each behind its extra (``kilostar-otel[asgi]``, ...)."""

__all__: list[str] = []
