"""The ``kilostar-otel`` command line: ``demo`` (and, later, ``serve``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kilostar-otel",
        description="KiloStar request/workflow ids as OpenTelemetry traces.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="run a request that starts a linked workflow and print both traces",
        description="Run a request that starts a linked workflow and print both traces.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from kilostar_otel.cli.demo import run_demo

        return run_demo()
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
