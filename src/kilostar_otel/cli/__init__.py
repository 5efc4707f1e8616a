"""The ``kilostar-otel`` command line: ``demo`` and ``serve``.

``kilostar-otel demo`` shows the whole idea with no back end; ``kilostar-otel serve`` is the same
local viewer as a long-running OTLP receiver for development. Bad arguments print one line on
stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

from kilostar_otel._names import DISTRIBUTION_NAME
from kilostar_otel._version import __version__

__all__ = ["build_parser", "main", "missing_extra", "parse_args"]

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_JSONL = "kilostar-demo-spans.jsonl"
#: What each command imports beyond the core install; the ``cli`` extra installs all of it.
NEEDS = {
    "demo": (
        "httpx",
        "starlette",
        "uvicorn",
        "rich",
        "opentelemetry.instrumentation.asgi",
        "opentelemetry.instrumentation.httpx",
    ),
    "serve": ("rich",),
}


def missing_extra(command: str) -> str | None:
    """One line naming the ``cli`` extra if ``command`` cannot run here, else None."""
    for module in NEEDS.get(command, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            return (
                f"kilostar-otel {command}: error: {command} needs the cli extra "
                f"({module} is missing): pip install 'kilostar-otel[cli]'"
            )
    return None


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: message``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (try '{self.prog} --help')\n")


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"seconds out of range 0-86400: {value}")
    return seconds


def _otlp_url(value: str) -> str:
    try:
        parsed = urlsplit(value)
        port = parsed.port
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid URL: {value!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f"expected http(s)://HOST:PORT, e.g. http://localhost:4317; got {value!r}"
        )
    if port == 0:
        raise argparse.ArgumentTypeError(f"port 0 is not a collector's port: {value!r}")
    if parsed.username is not None or parsed.query or parsed.fragment:
        raise argparse.ArgumentTypeError(
            f"no credentials, query or fragment in the endpoint, please: {value!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kilostar-otel`` (also used by the tests and the docs)."""
    parser = _Parser(
        prog=DISTRIBUTION_NAME,
        description=(
            "KiloStar request and workflow ids as OpenTelemetry traces. "
            "Start with 'kilostar-otel demo'."
        ),
        epilog="Documentation: docs/index.md (mkdocs site). Exit status: 0 ok, 1 failure, 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a local web app, send it requests, print each request with its workflows",
        description=(
            "Start a Starlette app under uvicorn on 127.0.0.1 (a free port), send it requests "
            "with an instrumented httpx client (with and without X-Request-Id), one of which "
            "starts a workflow with async and threaded steps, then print every request trace as "
            "a tree with its linked workflow traces nested under the span that started them, "
            "and write the spans as OTLP/JSON lines. No back end needed; finishes in seconds."
        ),
        epilog="Example: kilostar-otel demo --otlp-endpoint http://localhost:4317",
    )
    demo.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        type=_otlp_url,
        help=(
            "send the spans to this OTLP collector or Jaeger (http(s)://HOST:PORT) instead of "
            "the embedded receiver; prints the ids to look up instead of the trees"
        ),
    )
    demo.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="OTLP protocol for --otlp-endpoint (default: http/protobuf on port 4318, else grpc)",
    )
    demo.add_argument(
        "--out",
        metavar="PATH",
        help=(
            f"also write the spans to PATH as OTLP/JSON lines (default: ./{DEFAULT_JSONL} with "
            "the embedded receiver; with --otlp-endpoint, only when given)"
        ),
    )
    demo.add_argument(
        "--ray",
        action="store_true",
        help="run the workflow's steps as Ray tasks on a local Ray (needs kilostar-otel[ray])",
    )
    demo.add_argument(
        "--no-color",
        action="store_true",
        help="plain text (also the default with NO_COLOR set or when output is not a terminal)",
    )

    serve = commands.add_parser(
        "serve",
        help="receive OTLP locally and print traces as they complete (Ctrl-C stops)",
        description=(
            "An OTLP receiver (gRPC and HTTP/protobuf) for local development: point your app's "
            "exporter at it and every request is printed as a tree once it is complete, with "
            "its workflow traces nested under the span that started them (a request waits for "
            "its workflows; the link is the key). Ctrl-C exits cleanly."
        ),
        epilog=(
            "Example: kilostar-otel serve --grpc-port 4317 --http-port 4318, then run your app "
            "with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317"
        ),
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--grpc-port",
        type=_port,
        default=4317,
        metavar="PORT",
        help="OTLP/gRPC port (default: 4317; 0 picks a free port)",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=4318,
        metavar="PORT",
        help="OTLP/HTTP port, path /v1/traces (default: 4318; 0 picks a free port)",
    )
    serve.add_argument(
        "--out", metavar="PATH", help="also append every received request to PATH as OTLP/JSON"
    )
    serve.add_argument(
        "--settle",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help=(
            "print a request once nothing new arrived for it for this long (default: 0.5); a "
            "request still waiting on another service's spans (its root, or the server span "
            "under a client span) waits 6 s, one SDK batch delay and a margin"
        ),
    )
    serve.add_argument(
        "--max-wait",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="print a request even if its workflows are still missing after this (default: 30)",
    )
    serve.add_argument(
        "--no-color",
        action="store_true",
        help="plain text (also the default with NO_COLOR set or when output is not a terminal)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; unknown arguments are reported by the subcommand they were given to."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 bad arguments)."""
    args = parse_args(argv)
    message = missing_extra(args.command)
    if message is not None:
        print(message, file=sys.stderr)
        return 1
    if args.command == "demo":
        from kilostar_otel.cli.demo import run_demo

        return run_demo(args)
    if args.command == "serve":
        from kilostar_otel.cli.serve import run_serve

        return run_serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
