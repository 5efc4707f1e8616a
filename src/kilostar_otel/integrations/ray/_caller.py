"""The caller: ``remote()`` and the proxies whose ``.remote()`` calls carry ``snapshot()``.

The proxies forward everything else to Ray's own objects and pickle as them (``__reduce__``), so
a traced handle can be passed to other tasks and actors.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from kilostar_otel.context import snapshot
from kilostar_otel.integrations.ray._callee import SNAPSHOT_KWARG, traced_callee, traced_class

__all__ = [
    "TracedActorClass",
    "TracedActorHandle",
    "TracedRemoteFunction",
    "remote",
    "traced_handle",
    "unwrap",
]


def _with_snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    if SNAPSHOT_KWARG not in kwargs:
        kwargs[SNAPSHOT_KWARG] = snapshot()
    return kwargs


class _Proxy:
    """Forwards everything to the wrapped Ray object; subclasses add the traced ``remote()``."""

    __slots__ = ("_kilostar_inner",)

    def __init__(self, inner: Any) -> None:
        self._kilostar_inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._kilostar_inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kilostar_inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._kilostar_inner,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._kilostar_inner!r})"


class _TracedInvoker(_Proxy):
    """Wraps anything with a ``.remote()`` (an ``options()`` result, an actor method)."""

    __slots__ = ()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the call with the caller's :func:`~kilostar_otel.snapshot` attached."""
        return self._kilostar_inner.remote(*args, **_with_snapshot(kwargs))

    def options(self, **options: Any) -> _TracedInvoker:
        """Like Ray's ``options()``; the result still carries the snapshot."""
        return _TracedInvoker(self._kilostar_inner.options(**options))


class TracedRemoteFunction(_TracedInvoker):
    """A ``ray.remote`` function whose ``.remote()`` calls carry the caller's ids and trace."""

    __slots__ = ()


class TracedActorHandle:
    """An actor handle whose method calls carry the caller's ids and trace.

    Methods of a class made with :func:`remote` get the snapshot; any other attribute is the
    handle's own. Use :func:`unwrap` for APIs that need Ray's handle (``ray.kill``).
    """

    __slots__ = ("_kilostar_handle", "_kilostar_methods", "_kilostar_traced")

    def __init__(self, handle: Any) -> None:
        self._kilostar_handle = handle
        self._kilostar_traced = _traced_methods(handle)
        #: The traced methods asked for so far (Ray binds a new method object on every access).
        self._kilostar_methods: dict[str, _TracedInvoker] = {}

    def __getattr__(self, name: str) -> Any:
        method = self._kilostar_methods.get(name)
        if method is not None:
            return method
        attr = getattr(self._kilostar_handle, name)
        if self._kilostar_traced is None:
            return _TracedInvoker(attr)
        if name in self._kilostar_traced:
            method = self._kilostar_methods[name] = _TracedInvoker(attr)
            return method
        return attr

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._kilostar_handle,))

    def __eq__(self, other: object) -> bool:
        return bool(unwrap(other) == self._kilostar_handle)

    def __hash__(self) -> int:
        return hash(self._kilostar_handle)

    def __repr__(self) -> str:
        return f"TracedActorHandle({self._kilostar_handle!r})"


def _traced_methods(handle: Any) -> frozenset[str] | None:
    """Names of the methods whose signature accepts the snapshot (None: unknown, assume all)."""
    signatures = getattr(handle, "_ray_method_signatures", None)
    if not isinstance(signatures, Mapping):
        return None
    return frozenset(
        name
        for name, params in signatures.items()
        if any(getattr(p, "name", None) == SNAPSHOT_KWARG for p in params)
    )


class _TracedActorOptions(_Proxy):
    """An actor class's ``options()`` result: ``.remote()`` returns a traced handle."""

    __slots__ = ()

    def remote(self, *args: Any, **kwargs: Any) -> TracedActorHandle:
        """Create the actor; return a :class:`TracedActorHandle`."""
        return TracedActorHandle(self._kilostar_inner.remote(*args, **kwargs))


class TracedActorClass(_TracedActorOptions):
    """A ``ray.remote`` actor class whose handles carry the caller's ids and trace."""

    __slots__ = ()

    def options(self, **options: Any) -> _TracedActorOptions:
        """Like Ray's ``options()``; ``.remote()`` on the result returns a traced handle."""
        return _TracedActorOptions(self._kilostar_inner.options(**options))


def remote(*args: Any, **options: Any) -> Any:
    """``ray.remote`` whose calls carry the caller's ids and trace into the task or actor.

    Use as ``@remote`` or ``@remote(num_cpus=1, ...)`` (same options as ``ray.remote``) on a
    function or a class. Each ``.remote()`` call passes :func:`~kilostar_otel.snapshot`; the
    callee runs in a span that is a child of the caller's span, with the caller's ids bound.
    """
    import ray

    def make(obj: Any) -> Any:
        if inspect.isclass(obj):
            traced_cls = traced_class(obj)
            return TracedActorClass(
                ray.remote(**options)(traced_cls) if options else ray.remote(traced_cls)
            )
        fn = traced_callee(obj)
        return TracedRemoteFunction(ray.remote(**options)(fn) if options else ray.remote(fn))

    if len(args) == 1 and not options and callable(args[0]):
        return make(args[0])
    if args:
        raise TypeError("remote() takes a function or class, or keyword options only")
    return make


def traced_handle(handle: Any) -> TracedActorHandle:
    """Wrap an actor handle (e.g. from ``ray.get_actor``) so its calls carry the snapshot."""
    if isinstance(handle, TracedActorHandle):
        return handle
    return TracedActorHandle(handle)


def unwrap(obj: Any) -> Any:
    """Return Ray's own object behind a traced handle, class or function (``ray.kill(...)``)."""
    if isinstance(obj, TracedActorHandle):
        return obj._kilostar_handle
    if isinstance(obj, (_TracedInvoker, TracedActorClass, _TracedActorOptions)):
        return obj._kilostar_inner
    return obj
