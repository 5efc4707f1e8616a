"""Turn benchmark results into the table (stdout), ``docs/benchmarks.md`` and the bar chart."""

from __future__ import annotations

import platform
import statistics
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.cases import CASES, GROUPS, Case, Target

__all__ = ["Report", "Row", "build_report", "render_markdown", "render_text", "write_chart"]

#: Packages whose versions the numbers depend on.
VERSIONS = (
    "kilostar-otel",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "openinference-instrumentation",
    "opentelemetry-processor-baggage",
    "asgi-correlation-id",
    "starlette",
    "pytest-benchmark",
)
CAPACITY_RATIO_TARGET = 1.5
MEMORY_TARGET_BYTES = 30 * 1024 * 1024
CHART_NAME = "benchmarks.png"


@dataclass
class Row:
    """One arm of one group: its median over the passes and, for a non-ours arm, the ratio."""

    case: Case
    median_s: float  # the lowest per-pass median: the pass the machine disturbed least
    passes: list[float]
    ratio: float | None = None  # median over the passes of median(ours) / median(this arm)
    ratio_range: tuple[float, float] | None = None  # quartiles of the per-pass ratios
    target: Target | None = None

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: no target)."""
        if self.target is None or self.ratio is None:
            return None
        return self.target.met(self.ratio)


@dataclass
class Report:
    """Everything the table, the page and the chart show."""

    rows: dict[str, list[Row]]
    passes: int
    capacity: dict[str, Any] | None
    meta: dict[str, str] = field(default_factory=dict)
    app: dict[str, Any] | None = None  # bench_app results
    ray: dict[str, Any] | None = None  # bench_ray results

    def targets(self) -> list[tuple[str, str, bool]]:
        """Every target: (what, measured, met)."""
        found: list[tuple[str, str, bool]] = []
        for group, rows in self.rows.items():
            for row in rows:
                if row.target is not None and row.ratio is not None:
                    found.append(
                        (
                            f"{GROUPS[group].title.split(' ', 1)[0]} vs {row.case.label}",
                            f"{row.ratio:.2f}\u00d7 (target {row.target.describe()})",
                            bool(row.met),
                        )
                    )
        capacity = self.capacity
        if capacity:
            ratio = capacity_ratio(capacity)
            found.append(
                (
                    "6. zero-drop paced rate vs SDK default",
                    f"{ratio:.2f}\u00d7 (target ≥ {CAPACITY_RATIO_TARGET:.1f}\u00d7)",
                    ratio >= CAPACITY_RATIO_TARGET,
                )
            )
            growth = memory_growth(capacity, "kilostar")
            spans = capacity["settings"]["memory_spans"]
            found.append(
                (
                    f"6. resident memory growth over {spans:,} spans",
                    f"{growth / 2**20:.1f} MB (target < 30 MB)",
                    growth < MEMORY_TARGET_BYTES,
                )
            )
            found += tight_loop_targets(capacity)
        if self.app:
            found += app_targets(self.app)
        if self.ray:
            found += ray_targets(self.ray)
        return found


#: Whole application: (other arm, metric, highest kilostar ÷ arm, what) from issue 16.
APP_TARGETS = (
    ("otel", "thread_cpu_s", 1.03, "request-thread CPU"),
    ("otel", "cpu_s", 0.80, "process CPU"),
    ("logfire", "cpu_s", 0.50, "process CPU"),
)
RAY_RATIO_TARGET = 1.3
#: Traced Ray arms whose spans must all arrive (the no-flush arm shows what is lost without).
RAY_DELIVERING = (
    "traced_actor",
    "traced_actor_arg",
    "traced_actor_after",
    "traced_actor_wait",
    "traced_task",
)
#: The arms with kilostar-otel's defaults: the ones the ratio target is about.
RAY_DEFAULTS = ("traced_actor", "traced_task")
TIGHT_RATE_TARGET = 0.85


def app_targets(app: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The whole-application targets: CPU ratios and no span lost."""
    from benchmarks.bench_app import LABELS, summary

    brief = summary(app)
    found = []
    for arm, metric, limit, what in APP_TARGETS:
        ratio = brief["ratios"][arm][metric]["ratio"]
        found.append(
            (
                f"7. {what} vs {LABELS[arm]}",
                f"{ratio:.2f}\u00d7 (target ≤ {limit:.2f}\u00d7)"
                if ratio is not None
                else "no lossless pass",
                ratio is not None and ratio <= limit,
            )
        )
    ours = brief["arms"]["kilostar"]
    lost = ours["created"] - ours["delivered"]
    found.append(
        (
            "7. kilostar-otel spans lost, every pass",
            f"{lost:,} of {ours['created']:,} ({len(ours['lossy_passes'])} lossy pass(es))",
            lost == 0 and not ours["lossy_passes"],
        )
    )
    return found


def ray_targets(ray: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The Ray targets: traced vs plain calls, and every traced span delivered."""
    from benchmarks.bench_ray import LABELS, PAIRS, summary

    brief = summary(ray)
    found = []
    for traced, plain in PAIRS:
        if traced not in RAY_DEFAULTS:
            continue
        ratio = brief["ratios"][traced]["ratio"]
        found.append(
            (
                f"8. {LABELS[traced]} vs {LABELS[plain]}",
                f"{ratio:.2f}\u00d7 (target ≤ {RAY_RATIO_TARGET:.1f}\u00d7)",
                ratio <= RAY_RATIO_TARGET,
            )
        )
    made = sum(ray["made"][arm] for arm in RAY_DELIVERING)
    delivered = sum(ray["delivered"][arm] for arm in RAY_DELIVERING)
    found.append(
        (
            "8. spans of traced Ray calls delivered",
            f"{delivered:,} of {made:,}",
            delivered == made,
        )
    )
    return found


def tight_loop_targets(capacity: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The tight loop of ``memory_spans`` spans: none dropped, and its rate vs the same loop with
    export disabled (the median of the segments' ratios; the arms took turns)."""
    from benchmarks.bench_app import spread

    memory = capacity["memory"]
    ours = memory["kilostar"]
    spans = ours["spans"]
    found = [
        (
            f"6. tight loop of {spans:,} spans: lost",
            f"{spans - ours.get('delivered', spans):,} (counted drops {ours['counted_drops']})",
            ours.get("delivered", spans) == spans and not ours["counted_drops"],
        )
    ]
    bare = memory.get("no_export")
    if bare:
        ratios = [b / o for b, o in zip(bare["segments"], ours["segments"], strict=True)]
        ratio = statistics.median(ratios)
        low, high = spread(ratios) or (ratio, ratio)
        found.append(
            (
                "6. tight loop rate vs the same loop with export disabled",
                f"{ratio:.2f}\u00d7 (quartiles {low:.2f}-{high:.2f} over {len(ratios)} segments; "
                f"target ≥ {TIGHT_RATE_TARGET:.2f}\u00d7)",
                ratio >= TIGHT_RATE_TARGET,
            )
        )
    return found


def capacity_ratio(capacity: dict[str, Any]) -> float:
    """Zero-drop rate of kilostar ÷ that of the SDK default."""
    rates = capacity["zero_drop_rate"]
    return float(rates["kilostar"]) / float(rates["sdk_default"]) if rates["sdk_default"] else 0.0


def memory_growth(capacity: dict[str, Any], arm: str) -> int:
    """The larger of peak and final resident growth for ``arm``, in bytes."""
    memory = capacity["memory"][arm]
    peak = memory.get("peak_growth")
    return int(max(memory["rss_growth"], peak if peak is not None else 0))


def _versions() -> str:
    found = []
    for name in VERSIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def build_report(
    micro_passes: list[list[dict[str, Any]]],
    capacity: dict[str, Any] | None,
    app: dict[str, Any] | None = None,
    ray: dict[str, Any] | None = None,
) -> Report:
    """Combine pytest-benchmark JSON ``benchmarks`` lists (one per pass), the capacity results,
    the whole-application results (``bench_app``) and the Ray results (``bench_ray``)."""
    per_case: dict[str, list[float]] = {}
    for benchmarks in micro_passes:
        for bench in benchmarks:
            info = bench.get("extra_info", {})
            key = f"{info.get('group')}/{info.get('case')}"
            per_case.setdefault(key, []).append(float(bench["stats"]["median"]))
    rows: dict[str, list[Row]] = {}
    for group in GROUPS:
        cases = [c for c in CASES if c.group == group and c.key in per_case]
        if not cases:
            continue
        ours = next((c for c in cases if c.role == "ours"), None)
        group_rows = []
        for case in cases:
            passes = per_case[case.key]
            row = Row(case, min(passes), passes)  # the least disturbed pass
            if ours is not None and case is not ours:
                # Arms of a group run moments apart within a pass, so the per-pass ratio cancels
                # what the (shared) machine was doing; its median over the passes is the ratio.
                pairs = [a / b for a, b in zip(per_case[ours.key], passes, strict=True) if b]
                row.ratio = statistics.median(pairs)
                if len(pairs) >= 4:
                    quartiles = statistics.quantiles(pairs, n=4)
                    row.ratio_range = (quartiles[0], quartiles[2])
                row.target = next((t for t in GROUPS[group].targets if t.other == case.name), None)
            group_rows.append(row)
        rows[group] = group_rows
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_count()} CPU(s)",
        "versions": _versions(),
    }
    return Report(rows, len(micro_passes), capacity, meta, app, ray)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _time(seconds: float) -> str:
    nano = seconds * 1e9
    return f"{nano:.0f} ns" if nano < 999.5 else f"{nano / 1000:.2f} µs"


def _ratio_cell(row: Row) -> str:
    if row.ratio is None:
        return "—"
    cell = f"{row.ratio:.2f}\u00d7"
    if row.ratio_range is not None:
        cell += f" ({row.ratio_range[0]:.2f}\u2013{row.ratio_range[1]:.2f})"
    return cell


def _met_cell(row: Row) -> str:
    if row.met is None:
        return ""
    return "✅" if row.met else "❌"


def _micro_table(report: Report) -> list[list[str]]:
    table = []
    for group, rows in report.rows.items():
        for row in rows:
            table.append(
                [
                    GROUPS[group].title.split(" ", 1)[0].rstrip("."),
                    ("**" + row.case.label + "**") if row.case.role == "ours" else row.case.label,
                    _time(row.median_s),
                    _ratio_cell(row),
                    row.target.describe() if row.target else "",
                    _met_cell(row),
                ]
            )
    return table


def _capacity_table(capacity: dict[str, Any]) -> list[list[str]]:
    table = []
    labels = {
        "no_export": "`configure(exporter='none')` (export disabled)",
        "sdk_default": "SDK default `BatchSpanProcessor`",
        "kilostar": "**`configure()`**",
    }
    spans = capacity["settings"]["memory_spans"]
    for arm in [a for a in labels if a in capacity["memory"]]:
        memory = capacity["memory"][arm]
        peak = memory.get("peak_growth")
        rate = memory.get("rate", spans / memory["seconds"])
        delivered = memory.get("delivered")
        long_loop = [
            f"{rate:,.0f} spans/s",
            "—" if delivered is None else f"{delivered:,} / {spans:,}",
        ]
        if arm in capacity["tight"]:
            tight = capacity["tight"][arm]
            drops = tight["produced"] - tight["delivered"]
            counted = tight["counted_drops"]
            short_loop = [
                ("≥ " if arm in capacity.get("producer_bound", ()) else "")
                + f"{capacity['zero_drop_rate'][arm]:,.0f} spans/s",
                f"{tight['delivered'] / tight['produced']:.1%} ({tight['delivered']:,})",
                f"{drops:,}" + ("" if counted is None else f" (counted: {counted:,})"),
            ]
        else:
            short_loop = ["—", "—", "—"]
        table.append(
            [
                labels[arm],
                *short_loop,
                *long_loop,
                "—" if peak is None else f"{peak / 2**20:.1f} MB",
                f"{memory['rss_growth'] / 2**20:.1f} MB",
            ]
        )
    return table


def _us(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e6:,.0f} µs"


def _ratio_text(entry: dict[str, Any]) -> str:
    ratio, spread = entry.get("ratio"), entry.get("spread") or entry.get("quartiles")
    if ratio is None:
        return "—"
    text = f"{ratio:.2f}\u00d7"
    if spread is not None:
        text += f" ({spread[0]:.2f}\u2013{spread[1]:.2f})"
    return text


APP_HEADER = [
    "Arm",
    "Request-thread CPU",
    "Process CPU",
    "Wall",
    "RSS",
    "Delivered / created",
    "kilostar ÷ arm: thread CPU",
    "process CPU",
    "wall",
]


def _app_table(app: dict[str, Any]) -> list[list[str]]:
    from benchmarks.bench_app import ARMS, LABELS, summary

    brief = summary(app)
    table = []
    for arm in ARMS:
        entry = brief["arms"][arm]
        ratios = brief["ratios"].get(arm)
        delivered = f"{entry['delivered']:,} / {entry['created']:,}"
        if entry["lossy_passes"]:
            delivered += f" (lossy passes: {', '.join(str(p + 1) for p in entry['lossy_passes'])})"
        table.append(
            [
                f"**{LABELS[arm]}**" if arm == "kilostar" else LABELS[arm],
                _us(entry["thread_cpu_s"]),
                _us(entry["cpu_s"]),
                _us(entry["wall_s"]),
                f"{entry['rss'] / 2**20:.0f} MB",
                delivered,
                *(
                    [_ratio_text(ratios[m]) for m in ("thread_cpu_s", "cpu_s", "wall_s")]
                    if ratios
                    else ["—", "—", "—"]
                ),
            ]
        )
    return table


RAY_HEADER = ["Call", "Median", "traced ÷ plain (quartiles)", "Spans delivered / calls"]


def _ray_table(ray: dict[str, Any]) -> list[list[str]]:
    from benchmarks.bench_ray import ARMS, LABELS, summary

    brief = summary(ray)
    table = []
    for arm in ARMS:
        ratio = brief["ratios"].get(arm)
        table.append(
            [
                LABELS[arm],
                f"{brief['medians'][arm] * 1e3:.2f} ms",
                _ratio_text(ratio) if ratio else "—",
                f"{ray['delivered'][arm]:,} / {ray['made'][arm]:,}"
                if arm in ray["delivered"]
                else "—",
            ]
        )
    return table


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


MICRO_HEADER = ["#", "Arm", "Median (best pass)", "kilostar ÷ arm (quartiles)", "Target", "Met"]
CAPACITY_HEADER = [
    "Pipeline",
    "Zero-drop paced rate",
    "Tight loop: delivered",
    "Tight loop: dropped",
    "Long loop: rate",
    "Long loop: delivered",
    "Peak RSS growth",
    "RSS growth after",
]


def render_text(report: Report) -> str:
    """The table for the terminal."""

    def plain(rows: list[list[str]], header: list[str]) -> str:
        rows = [[cell.replace("**", "").replace("`", "") for cell in row] for row in rows]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) for r in rows]
        return "\n".join(line.rstrip() for line in lines)

    out = [
        f"{report.passes} pass(es); median = the lowest per-pass median, ratio = median of the "
        "per-pass kilostar ÷ arm (lower is better), with its quartiles",
        "",
    ]
    out.append(plain(_micro_table(report), MICRO_HEADER).replace("✅", "yes").replace("❌", "NO"))
    if report.capacity:
        out += ["", "Export capacity (OTLP/gRPC to the embedded receiver on loopback)", ""]
        out.append(plain(_capacity_table(report.capacity), CAPACITY_HEADER))
    if report.app:
        out += ["", "Whole application (per request; ratios: median of the per-pass ratios)", ""]
        out.append(plain(_app_table(report.app), APP_HEADER))
    if report.ray:
        out += ["", "Ray calls (sequential, one at a time)", ""]
        out.append(plain(_ray_table(report.ray), RAY_HEADER))
    out += ["", "Targets:"]
    out += [
        f"  [{'ok' if met else 'MISSED'}] {what}: {value}" for what, value, met in report.targets()
    ]
    return "\n".join(out)


def render_markdown(report: Report, chart_name: str = CHART_NAME) -> str:
    """``docs/benchmarks.md``."""
    meta = report.meta
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (python -m benchmarks); edits here are overwritten. -->",
        "",
        "kilostar-otel runs on every request and every span, so each hot path is measured side by",
        "side with what a user could pick instead, in the same run, as a ratio. Run them yourself:",
        "",
        "```bash",
        "make bench   # or: .venv/bin/python -m benchmarks",
        "```",
        "",
        f"Last run: {meta.get('date', '')}, {meta.get('python', '')} on {meta.get('machine', '')}.",
        f"Versions: {meta.get('versions', '')}.",
        "",
        "## Targets",
        "",
        _markdown_table(
            ["Target", "Measured", "Met"],
            [[what, value, "✅" if met else "❌"] for what, value, met in report.targets()],
        ),
        "",
        f"![Benchmark medians and export capacity]({chart_name})",
        "",
        "## Hot paths",
        "",
        "Micro-benchmarks with [pytest-benchmark](https://pytest-benchmark.readthedocs.io/) "
        f"(`benchmarks/bench_micro.py`), {report.passes} short passes in alternating order, each "
        "in a fresh interpreter. The arms of a group run moments apart within a pass, so each "
        "pass gives a ratio, kilostar's median ÷ the arm's, that cancels what the shared machine "
        "was doing. The table shows each arm's median from its least disturbed pass (the "
        "lowest per-pass median) and the median of the per-pass ratios (lower is better), with "
        "their quartiles in brackets; the chart shows each arm's time relative to kilostar-otel "
        "from those ratios.",
        "",
        _markdown_table(MICRO_HEADER, _micro_table(report)),
        "",
    ]
    for group, rows in report.rows.items():
        if rows:
            parts += [f"- **{GROUPS[group].title}**: {GROUPS[group].what}"]
    capacity = report.capacity
    if capacity:
        settings = capacity["settings"]
        parts += [
            "",
            "## Export capacity",
            "",
            "Both pipelines run in one process with `KiloStarSpanProcessor` and a request id "
            "bound, and export over OTLP/gRPC to kilostar-otel's embedded `OtlpReceiver` on "
            "127.0.0.1 (its own process, counting arrivals per `service.name`). *SDK default* is "
            "the SDK's `BatchSpanProcessor` with its defaults and the SDK's `OTLPSpanExporter`; "
            "`configure()` is kilostar-otel's pipeline with its defaults. Each span is "
            "`with tracer.start_as_current_span('work', attributes={'work.item': n})`.",
            "",
            f"- **Zero-drop paced rate**: spans are produced at a fixed rate for "
            f"{settings['seconds']:g} s, starting at {settings['start_rate']:,.0f}/s and raised "
            f"by {settings['step'] - 1:.0%} a step (the arms alternate at each step) until spans "
            f"are lost, then {settings.get('refine', 0)} bisection steps between the last "
            "lossless and the first lossy rate; the rate shown is the highest achieved rate at "
            "which every span arrived (≥: no span was ever lost, the process could not make "
            "spans any faster).",
            f"- **Tight loop**: {settings['tight_spans']:,} spans as fast as the process can make "
            "them; what arrives, and what the pipeline counted as dropped (`dropped_spans`).",
            f"- **Long loop and memory**: each arm makes {settings['memory_spans']:,} spans in a "
            "tight loop in its own process, the processes taking turns in "
            f"{settings.get('long_segments', 1)} segments (in alternating order, so that every "
            "arm meets the machine's slow and fast moments alike): its rate, the spans that "
            "arrived, and the growth of resident memory (peak, from `VmHWM` reset before the "
            "loop, and after the final flush) over the RSS before the loop. The same loop with "
            "`configure(exporter='none')` (export disabled) is the rate to compare with; the "
            "ratio is the median of the segments' ratios. "
            + (
                f"The loop thread runs alone on CPU {capacity['cores'][0][0]}; each arm's other "
                "threads (the export worker, gRPC's) and the receiver run on CPU "
                f"{', '.join(map(str, capacity['cores'][1]))}. Left to the scheduler, on this "
                "2-core machine they sometimes landed on the loop's core, and the segments' "
                "ratios ranged from 0.53 to 0.98."
                if capacity.get("cores")
                else "The OS placed every thread (no CPU affinity here)."
            ),
            "",
            _markdown_table(CAPACITY_HEADER, _capacity_table(capacity)),
            "",
            "Every paced step:",
            "",
            _markdown_table(
                ["Pipeline", "Target rate", "Achieved", "Delivered", "Counted drops"],
                [
                    [
                        row["arm"],
                        f"{row['rate']:,.0f}/s",
                        f"{row['achieved']:,.0f}/s",
                        f"{row['delivered']:,} / {row['produced']:,}",
                        "—" if row["counted_drops"] is None else f"{row['counted_drops']:,}",
                    ]
                    for row in capacity["ladder"]
                ],
            ),
        ]
    if report.app:
        parts += ["", *_app_section(report.app)]
    if report.ray:
        parts += ["", *_ray_section(report.ray)]
    parts += ["", *NOTES, ""]
    return "\n".join(parts)


def _app_section(app: dict[str, Any]) -> list[str]:
    settings = app["settings"]
    return [
        "## Whole application",
        "",
        "The same Starlette app (`benchmarks/bench_app.py`): `/items` makes three child spans, "
        "`/plan` the same three and then a workflow (a new trace linked to the request) with two "
        "steps; requests alternate between them, driven in-process by direct ASGI calls. Each "
        "arm runs in its own fresh process and exports over OTLP/gRPC to one `OtlpReceiver` in "
        "another process, which counts what arrives. *Plain OpenTelemetry by hand*: the SDK's "
        "`BatchSpanProcessor` and OTLP exporter, OTel's ASGI middleware, the workflow a new "
        "root span with a link. *kilostar-otel*: `configure()`, `RequestIdMiddleware`, OTel's "
        "ASGI middleware, `workflow()`. *Pydantic Logfire*: `logfire.configure("
        "send_to_logfire=False, console=False, metrics=False)` with the SDK's batch processor "
        "and OTLP/gRPC exporter, `logfire.instrument_asgi`, `logfire.span`, the request id "
        "from asgi-correlation-id in `logfire.set_baggage`, the workflow "
        "`@logfire.instrument(new_trace=True)`. *asgi-correlation-id*: its middleware, the id "
        "put in baggage, plain OTel with `BaggageSpanProcessor`. Every arm makes the same spans "
        "(OTel's per-message `http send`/`receive` spans are off, as in Logfire's default).",
        "",
        f"{settings['passes']} passes, the arms' order alternating and rotating; in each, "
        f"{settings['warmup']:,} warm-up requests, then {settings['requests']:,} measured. Per "
        "request: *request-thread CPU* (`time.thread_time` of the thread that runs the app: "
        "what decides latency), *process CPU* (every thread, from the first measured request "
        "until the final flush has exported all their spans), wall time; RSS at the end. Medians "
        "over the passes with no span lost; ratios kilostar ÷ arm are the median of the "
        "per-pass ratios (lower is better), quartiles in brackets. A pass that loses spans is "
        "listed, not averaged in.",
        "",
        _markdown_table(APP_HEADER, _app_table(app)),
    ]


def _ray_section(ray: dict[str, Any]) -> list[str]:
    settings = ray["settings"]
    return [
        "## Ray calls",
        "",
        "A local Ray cluster (2 CPUs, `benchmarks/bench_ray.py`) whose workers run "
        "`setup_worker` and export over OTLP/gRPC to the receiver in its own process. The "
        "driver runs `configure()` and calls inside a request and a workflow. Calls do nothing "
        "and are made one at a time (`ray.get(x.remote())`), timed one by one, in runs of "
        f"{settings.get('run', settings['calls'])} calls per arm: one run per arm in a round (the "
        "order reversed every other round), so a change in the machine's speed reaches every arm "
        "alike while each arm's calls follow each other. "
        f"{settings['blocks']} blocks of {settings['calls']} calls per arm (after "
        f"{settings['warmup']} warm-up calls); the ratio is the median over the blocks of "
        "median(traced) ÷ median(plain). Then every traced call's span is counted at the "
        "receiver. `KILOSTAR_OTEL_RAY_FLUSH` says when a call's spans are exported: `idle` (the "
        "default) once the worker has had no call for 50 ms, `after` as the call ends (while "
        "the result travels back), `wait` before the result goes back. The *no flush* arm "
        "(`KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT=0`) leaves spans to the batch queue, which exports "
        "every 5 s and at a graceful exit (here the cluster's orderly stop); a worker killed "
        "before either loses them. It is the floor for any delivery scheme. The *carrying a "
        "snapshot* arms are plain Ray calls to a method or function that takes the "
        "`_kilostar_ctx` keyword, called with `snapshot()`, without tracing: what Ray itself "
        "charges for a call that carries any argument (a call with none skips Ray's argument "
        "handling), the floor for tracing that travels with the call. The *with one argument* "
        "arms call a method that takes one string, as most calls do: Ray's argument handling is "
        "then in both arms, and the snapshot is a second argument.",
        "",
        _markdown_table(RAY_HEADER, _ray_table(ray)),
    ]


NOTES = [
    "## How the export pipeline keeps up",
    "",
    "- `configure()` exports OTLP/gRPC with the SDK's exporter (its retries, TLS, headers, "
    "compression), but encodes with kilostar-otel's own protobuf writer, and encodes each span "
    "as it ends: the queue holds bytes, not span objects. The SDK's encoder builds one protobuf "
    "object per span, attribute and value at export time; meanwhile every queued span (a dozen "
    "objects) ages through the garbage collector's generations, and in a process whose one core "
    "(one GIL) is shared by the application and its exporter the full collections that follow "
    "cost more than the export itself. Encoded spans are plain bytes the collector never scans, "
    "the span object dies at once, and the byte budget is exact. The writer produces the SDK's "
    "bytes (tested against the SDK's encoder); a span it does not handle exactly like the SDK "
    "goes through the SDK's encoder. OTLP/HTTP and other exporters queue the spans and use "
    "their own encoders.",
    "- The writer is a small C extension for any span without a trace state or a status whose "
    "attribute values (its own, its events' and its links') are strings, booleans, integers or "
    "floats: nearly every span. It writes the span without the interpreter, so encoding no "
    "longer competes with the application for the GIL. Every other span, and every span where "
    "the package was installed without a C compiler, is written by the same encoder in Python, "
    "to the same bytes (tested on drawn spans: C, Python and the SDK's encoder agree). The "
    "export thread joins a batch in C too: one copy of each span's bytes into the request, "
    "grouped by resource and scope as the SDK groups them, so the export thread holds the GIL "
    "for well under a microsecond per span.",
    "- The queue holds 8,192 spans and a batch 1,024 (the SDK's defaults: 2,048 and 512): "
    "larger batches halve the cost per export request (in the application and in the "
    "collector), and the room absorbs the gaps while a batch is on the wire; the schedule "
    "stays at 5 s. `OTEL_BSP_*` variables and `configure()` arguments override all three.",
    "- The queue is kilostar-otel's own (a deque, one lock, one worker thread), bounded in "
    "spans and in bytes; every span handed to export ends in one count (`delivered_spans`, "
    "`failed_spans`, `dropped_spans`) and `shutdown()` logs the losses.",
    "- The cost moves: encoding as spans end puts a few microseconds per span on the thread "
    "that ends it (the request thread), and takes the export thread's work and the garbage "
    "collector's down by more; the application table shows both sides.",
    "",
    "## Reading the numbers",
    "",
    "- Absolute times depend on the machine (this one is shared, hence the quartiles); the "
    "ratios are what the targets are about. The span, workflow and capacity arms all pay the "
    "same SDK costs, so a ratio close to 1 means kilostar-otel adds little on top of the SDK.",
    "- 5a: inside a request, `workflow()` does more than a plain span by design (a root span "
    "in a new trace with its attributes and a link, plus a link and an event on the request "
    "span). The *by hand* arm does exactly that with the SDK alone, so kilostar ÷ *by hand* is "
    "what kilostar-otel itself adds, and *by hand* ÷ *plain span* is the SDK's floor for the "
    "extra work, which no implementation can go under.",
    "- 4a/4b: the two middlewares do different amounts of work: `RequestIdMiddleware` also puts "
    "the id in the OpenTelemetry context and in baggage, and rewrites the request's "
    "`X-Request-Id` and `baggage` headers for instrumentation inside it; "
    "asgi-correlation-id sets a `ContextVar`.",
]


def _panel_title(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text.replace("`", ""), width))


def write_chart(report: Report, path: Path) -> None:
    """The bar chart: per hot path each arm's time relative to kilostar-otel (from the per-pass
    ratios), then the zero-drop rates, the tight-loop delivery and the memory growth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(report.rows.items())
    capacity = report.capacity
    count = (
        len(panels) + (3 if capacity else 0) + (2 if report.app else 0) + (1 if report.ray else 0)
    )
    columns = 3
    lines = (count + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(5.6 * columns, 2.6 * lines), squeeze=False)
    flat = [ax for line in axes for ax in line]
    ours_color, other_color = "#2b7bba", "#b0b0b0"

    def bars(
        ax: Any,
        title: str,
        labels: list[str],
        values: list[float],
        ours: list[bool],
        xlabel: str,
        fmt: str,
    ) -> None:
        ax.barh(labels, values, color=[ours_color if o else other_color for o in ours])
        ax.invert_yaxis()
        ax.set_title(_panel_title(title), fontsize=8, loc="left")
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(labelsize=7)
        for y, value in enumerate(values):
            ax.text(value, y, " " + fmt.format(value), va="center", fontsize=7)
        ax.margins(x=0.3)

    for ax, (group, rows) in zip(flat, panels, strict=False):
        ours_row = next((r for r in rows if r.case.role == "ours"), rows[0])
        labels, values = [], []
        for row in rows:
            if row is ours_row:
                labels.append(f"{row.case.label}\n({_time(row.median_s)})")
                values.append(1.0)
            else:
                labels.append(row.case.label)
                values.append(1.0 / row.ratio if row.ratio else 0.0)
        bars(
            ax,
            GROUPS[group].title,
            labels,
            values,
            [row is ours_row for row in rows],
            "time relative to kilostar-otel (lower is better)",
            "{:.2f}\u00d7",
        )
        ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle="--")
    if capacity:
        names = ["SDK default", "configure()"]
        arms = ["sdk_default", "kilostar"]
        flags = [False, True]
        base = len(panels)
        bars(
            flat[base],
            "6. Zero-drop paced span rate",
            names,
            [capacity["zero_drop_rate"][a] / 1000 for a in arms],
            flags,
            "thousand spans/s (higher is better)",
            "{:.1f}k",
        )
        tight = capacity["tight"]
        bars(
            flat[base + 1],
            f"6. Delivered of a tight loop of {capacity['settings']['tight_spans']:,} spans",
            names,
            [100 * tight[a]["delivered"] / tight[a]["produced"] for a in arms],
            flags,
            "% of spans (higher is better)",
            "{:.0f}%",
        )
        flat[base + 1].set_xlim(0, 130)
        bars(
            flat[base + 2],
            f"6. Resident memory growth over {capacity['settings']['memory_spans']:,} spans",
            names,
            [memory_growth(capacity, a) / 2**20 for a in arms],
            flags,
            "MB (peak; target < 30 MB)",
            "{:.1f} MB",
        )
        flat[base + 2].axvline(MEMORY_TARGET_BYTES / 2**20, color="#c0392b", linestyle="--")
        largest = max(memory_growth(capacity, a) for a in arms) / 2**20
        flat[base + 2].set_xlim(0, max(MEMORY_TARGET_BYTES / 2**20, largest) * 1.2)
    base = len(panels) + (3 if capacity else 0)
    if report.app:
        from benchmarks.bench_app import ARMS as APP_ARMS
        from benchmarks.bench_app import LABELS as APP_LABELS
        from benchmarks.bench_app import summary as app_summary

        brief = app_summary(report.app)
        for offset, (metric, what) in enumerate(
            (("thread_cpu_s", "request-thread CPU"), ("cpu_s", "process CPU incl. export"))
        ):
            values = [(brief["arms"][a][metric] or 0.0) * 1e6 for a in APP_ARMS]
            bars(
                flat[base + offset],
                f"7. Whole application: {what} per request",
                [APP_LABELS[a] for a in APP_ARMS],
                values,
                [a == "kilostar" for a in APP_ARMS],
                "µs per request (lower is better)",
                "{:.0f} µs",
            )
        base += 2
    if report.ray:
        from benchmarks.bench_ray import ARMS as RAY_ARMS
        from benchmarks.bench_ray import LABELS as RAY_LABELS
        from benchmarks.bench_ray import summary as ray_summary

        medians = ray_summary(report.ray)["medians"]
        bars(
            flat[base],
            "8. Ray: one call, sequential (median)",
            [RAY_LABELS[a] for a in RAY_ARMS],
            [medians[a] * 1e3 for a in RAY_ARMS],
            [a.startswith("traced") for a in RAY_ARMS],
            "ms per call (lower is better)",
            "{:.2f} ms",
        )
    for ax in flat[count:]:
        ax.axis("off")
    fig.suptitle("kilostar-otel (blue) vs what a user could pick instead", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
