"""3. An app -> the collector (collector-config/otel-collector.yaml) -> Jaeger, under a mixed load.

The collector runs the very file docker compose mounts; only its addresses, ``decision_wait``
(2 s instead of 10 s), the batch timeout and the share of plain traces come from its environment.
Jaeger must end with every workflow trace whole, every request trace that started a workflow,
every trace with an error, and a share of the 400 plain requests within 5 sigma of the configured
20% (Binomial(400, 0.2): 80 ± 40; a correct collector misses that with probability < 1e-6).
"""

from __future__ import annotations

import kilostar_otel

from .conftest import SINGLE, Jaeger, StartCollector
from .load import assert_sampled_as_configured, collect, run_mixed_load

DECISION_WAIT = 2.0
PERCENTAGE = 20


def test_the_collector_keeps_workflows_their_requests_and_errors_and_samples_the_rest(
    jaeger: Jaeger, start_collector: StartCollector
) -> None:
    collector = start_collector(
        SINGLE,
        JAEGER_OTLP_GRPC_ENDPOINT=jaeger.otlp_grpc,
        TAIL_SAMPLING_DECISION_WAIT=f"{DECISION_WAIT}s",
        TAIL_SAMPLING_PERCENTAGE=str(PERCENTAGE),
        BATCH_TIMEOUT="200ms",
    )
    service = "kilostar-tail-sampling"
    app = kilostar_otel.configure(
        service_name=service, endpoint=collector.grpc_endpoint, protocol="grpc", set_global=False
    )
    try:
        load = run_mixed_load(app, app, workflows=20, errors=20, plain=400, tag="tail")
    finally:
        app.shutdown()
    found = collect(jaeger, load, service, settle=DECISION_WAIT + 2)
    kept = assert_sampled_as_configured(found, load, PERCENTAGE)
    # The collector saw every span and dropped the sampled-out ones itself.
    sent = 2 * 440 + 3 * 20
    assert collector.metric("otelcol_receiver_accepted_spans") == sent
    assert kept < len(load.plain)


def test_the_collector_takes_otlp_http_too(jaeger: Jaeger, start_collector: StartCollector) -> None:
    collector = start_collector(
        SINGLE,
        JAEGER_OTLP_GRPC_ENDPOINT=jaeger.otlp_grpc,
        TAIL_SAMPLING_DECISION_WAIT="1s",
        BATCH_TIMEOUT="100ms",
    )
    service = "kilostar-tail-sampling-http"
    app = kilostar_otel.configure(
        service_name=service,
        endpoint=collector.http_endpoint,
        protocol="http/protobuf",
        set_global=False,
    )
    try:
        load = run_mixed_load(app, app, workflows=3, errors=2, plain=0, tag="tail-http")
    finally:
        app.shutdown()
    found = collect(jaeger, load, service, settle=0)
    assert set(found) == set(load.required())
