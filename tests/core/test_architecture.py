"""The layering of docs/architecture.md, checked: arrows point down, and each name lives once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import kilostar_otel

SRC = Path(kilostar_otel.__file__).resolve().parent

# Lowest first. A module may import modules of its own layer or of a lower one, never higher.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"_names", "_headers", "_guard", "_internals", "_version", "ids"}),
    ("context", {"_w3c", "_idcontext", "context"}),
    ("propagation", {"propagation"}),
    ("span processing", {"processor", "sampling"}),
    ("workflow", {"_calls", "workflow"}),
    (
        "export",
        {
            "_settings",
            "_export",
            "_otlp",
            "_otlp_native",
            "configure",
            "distro",
            "processes",
            "_poison",
        },
    ),
    ("integrations and CLI", {"integrations", "viewer", "cli"}),
]
# Modules that still spell names or the token pattern themselves; remove a file once routed
# through _names / _headers.
NOT_YET_ROUTED: set[str] = set()
# Imports that point up, each a known debt with its fix. Keep this empty.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _layer_of(module: str) -> int:
    """Layer index of ``kilostar_otel.<module>`` (its first dotted part decides)."""
    head = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if head in members:
            return index
    raise AssertionError(f"kilostar_otel.{module} is in no layer of docs/architecture.md")


def _modules() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if p.name != "__init__.py" or p.parent != SRC]


def _imports(path: Path) -> set[str]:
    """``kilostar_otel`` modules ``path`` imports (at any depth, lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "kilostar_otel":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("kilostar_otel."):
                found.add(node.module.removeprefix("kilostar_otel."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kilostar_otel."):
                    found.add(alias.name.removeprefix("kilostar_otel."))
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_imports_point_down(path: Path) -> None:
    own = _layer_of(_module_name(path))
    for imported in _imports(path):
        if (_module_name(path), imported) in KNOWN_UPWARD:
            continue
        assert _layer_of(imported) <= own, (
            f"{_module_name(path)} ({LAYERS[own][0]}) imports {imported} "
            f"({LAYERS[_layer_of(imported)][0]}): arrows point down"
        )


def test_the_layer_check_can_fail() -> None:
    assert _layer_of("integrations.asgi") > _layer_of("context")
    with pytest.raises(AssertionError):
        _layer_of("somewhere_new")


def _offending_lines(pattern: re.Pattern[str], allowed: set[str]) -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative in allowed or relative in NOT_YET_ROUTED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


_OUR_NAME = re.compile(r"kilostar\.[a-z_.]+=?")


def _our_name_literals(source: str) -> list[int]:
    """Lines of string or bytes literals (not docstrings) that are one of our dotted names."""
    tree = ast.parse(source)
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            value = node.value.decode("latin-1") if type(node.value) is bytes else node.value
            if type(value) is str and _OUR_NAME.fullmatch(value):
                lines.append(node.lineno)
    return lines


def test_our_attribute_and_baggage_names_are_spelled_once() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative != "_names.py" and relative not in NOT_YET_ROUTED:
            found += [f"{relative}:{line}" for line in _our_name_literals(path.read_text())]
    assert found == []


def test_the_name_scan_can_fail() -> None:
    source = 'x = "kilostar.request_id"\ny = b"kilostar.request_id="\n"""kilostar.trace_id"""\n'
    assert _our_name_literals(source) == [1, 2]


def test_the_header_token_pattern_is_written_once() -> None:
    token = re.compile(re.escape(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"))
    assert _offending_lines(token, {"_headers.py"}) == []
