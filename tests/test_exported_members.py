"""The public surface, pinned: what ``kilostar_otel`` and each public module export.

Modelled on httpx's ``tests/test_exported_members.py``. A change here is an API change: add the
name on purpose (and to the docs), never by accident. Private modules (``_names``, ``_internals``,
...) keep public names inside and declare them in ``__all__`` too.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import kilostar_otel

PUBLIC_SURFACE: dict[str, list[str]] = {
    "kilostar_otel": [
        "KiloStarPropagator",
        "KiloStarSpanProcessor",
        "Telemetry",
        "Workflow",
        "__version__",
        "apply_snapshot",
        "bind_request_id",
        "bind_trace_id",
        "configure",
        "default_propagator",
        "extract",
        "get_request_id",
        "get_trace_id",
        "inject",
        "is_valid_request_id",
        "new_request_id",
        "new_trace_id",
        "request_id_scope",
        "reset_request_id",
        "reset_trace_id",
        "set_global",
        "snapshot",
        "trace_id_scope",
        "workflow",
        "wrap",
    ],
    "kilostar_otel.context": [
        "BAGGAGE_KEY",
        "apply_snapshot",
        "bind_request_id",
        "bind_trace_id",
        "get_request_id",
        "get_trace_id",
        "new_request_id",
        "request_id_scope",
        "reset_request_id",
        "reset_trace_id",
        "snapshot",
        "trace_id_scope",
        "wrap",
    ],
    "kilostar_otel.ids": [
        "REQUEST_ID_MAX_LENGTH",
        "REQUEST_ID_PATTERN",
        "is_valid_request_id",
        "is_valid_trace_id",
        "new_request_id",
        "new_trace_id",
    ],
    "kilostar_otel.processor": [
        "REQUEST_ID_ATTRIBUTE",
        "TRACE_ID_ATTRIBUTE",
        "KiloStarSpanProcessor",
    ],
    "kilostar_otel.propagation": [
        "REQUEST_ID_HEADER",
        "BaggagePropagator",
        "KiloStarPropagator",
        "TraceContextPropagator",
        "default_propagator",
        "extract",
        "inject",
        "set_global",
    ],
    "kilostar_otel.processes": ["flush_at_process_exit"],
    "kilostar_otel.sampling": ["LinkAwareSampler", "sampler_from_env", "sampler_from_name"],
    "kilostar_otel.workflow": [
        "WORKFLOW_NAME_ATTRIBUTE",
        "WORKFLOW_STARTED_EVENT",
        "Workflow",
        "workflow",
    ],
    "kilostar_otel.integrations.asgi": ["RequestIdMiddleware"],
    "kilostar_otel.integrations.wsgi": ["RequestIdMiddleware"],
    "kilostar_otel.integrations.httpx": ["async_inject_hook", "inject_hook", "install"],
    "kilostar_otel.integrations.requests": ["KiloStarAdapter", "Session", "inject_headers"],
    "kilostar_otel.integrations.logging": [
        "FIELDS",
        "FORMAT",
        "LOGURU_FORMAT",
        "LOG_EVENT",
        "LOG_EVENTS_DROPPED",
        "MAX_EVENTS_PER_SPAN",
        "MAX_MESSAGE_LENGTH",
        "RequestIdFilter",
        "SpanEventHandler",
        "install_loguru",
        "install_loguru_span_events",
        "log_fields",
        "loguru_patcher",
        "structlog_processor",
    ],
    "kilostar_otel.integrations.threads": ["ThreadPoolExecutor", "wrap"],
    "kilostar_otel.viewer": ["OtlpReceiver", "ReceivedSpan"],
    "kilostar_otel.cli": ["build_parser", "main", "missing_extra", "parse_args"],
}


# Private modules that define public names they do not list in __all__ yet (the settings table's
# row names); remove once their __all__ is complete.
INCOMPLETE_ALL: set[str] = set()


def _all_modules() -> list[str]:
    names = ["kilostar_otel"]
    for info in pkgutil.walk_packages(kilostar_otel.__path__, "kilostar_otel."):
        if not info.name.endswith("__main__"):  # runs the CLI when imported
            names.append(info.name)
    return sorted(names)


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module_name.split("."))


def test_the_package_exports_exactly_its_public_names() -> None:
    # As httpx: every public name in the package namespace is exported, and nothing else.
    public = sorted(
        name
        for name, value in vars(kilostar_otel).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert sorted(kilostar_otel.__all__) == public == sorted(PUBLIC_SURFACE["kilostar_otel"])


@pytest.mark.parametrize("module_name", sorted(PUBLIC_SURFACE))
def test_public_module_surface_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert list(module.__all__) == PUBLIC_SURFACE[module_name]


@pytest.mark.parametrize("module_name", sorted(set(_all_modules()) - INCOMPLETE_ALL))
def test_every_module_declares_what_it_defines(module_name: str) -> None:
    """Each module has ``__all__``; it names only real objects, and every public name the module
    defines itself is in it (a helper meant for this module only starts with ``_``)."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name
    }
    assert defined <= set(exported), f"{module_name} defines public names it does not export"


def test_private_modules_are_the_underscore_ones() -> None:
    """Private means one thing: a module whose name starts with ``_`` (not a ``_name`` inside a
    public module). The public modules above are the whole public surface."""
    public_modules = {name for name in _all_modules() if not _is_private(name)}
    undocumented = public_modules - set(PUBLIC_SURFACE)
    # Modules public by name that are not pinned here: the CLI's own parts, the viewer's parts,
    # and the modules other helpers are reworking (pinned once they settle).
    assert undocumented == {
        "kilostar_otel.cli.demo",
        "kilostar_otel.cli.serve",
        "kilostar_otel.configure",
        "kilostar_otel.distro",
        "kilostar_otel.integrations",
        "kilostar_otel.integrations.ray",
        "kilostar_otel.viewer.otlp_json",
        "kilostar_otel.viewer.receiver",
        "kilostar_otel.viewer.tree",
    }
