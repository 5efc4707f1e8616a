"""The docs site builds with ``mkdocs build --strict`` and its API reference covers every module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "kilostar_otel"
# The command line's implementation modules are documented through its --help (docs/index.md).
NOT_IN_REFERENCE = {
    "kilostar_otel.cli.demo",
    "kilostar_otel.cli.serve",
    "kilostar_otel.cli.__main__",
}


class _Loader(yaml.SafeLoader):
    """mkdocs.yml uses ``!!python/name:`` tags; the nav does not need them resolved."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    return []


def public_modules() -> set[str]:
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.add(".".join(parts))
    # Packages that only re-export what their modules define (documented there).
    reexports = {"kilostar_otel", "kilostar_otel.integrations", "kilostar_otel.viewer"}
    return modules - NOT_IN_REFERENCE - reexports


def test_every_page_in_the_nav_exists() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    missing = [p for p in nav_pages(config["nav"]) if not (ROOT / "docs" / p).is_file()]
    assert missing == [], f"pages in the nav without a file: {missing}"


def test_the_api_reference_documents_every_public_module() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: ([\w.]+)", api, re.MULTILINE))
    assert documented == public_modules()


def test_mkdocs_builds_the_site_with_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert done.returncode == 0, "\n".join(warnings) or done.stderr[-3000:]
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("RequestIdMiddleware", "KiloStarPropagator", "configure", "workflow"):
        assert name in api
