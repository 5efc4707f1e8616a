"""4. The gateway variant: two agents (gateway/agent.yaml) -> two gateways (gateway/gateway.yaml)
-> Jaeger, the very files docker compose runs, with a static resolver of loopback addresses.

Two services split every trace: the request's server span and the workflow root are exported by
``front`` through agent 1, the handler and a workflow step by ``back`` through agent 2. Each agent
routes by trace id, so both halves of a trace meet at one gateway, which decides for the whole
trace: every kept trace arrives whole, although its spans came through different agents' batches,
and the plain ones kept are within 5 sigma of the configured 20% (300 plain: 60 ± 35).
"""

from __future__ import annotations

import kilostar_otel

from .conftest import AGENT, GATEWAY, Jaeger, StartCollector
from .load import assert_sampled_as_configured, collect, run_mixed_load

DECISION_WAIT = 2.0
PERCENTAGE = 20


def test_two_agents_two_gateways_whole_traces_consistent_sampling(
    jaeger: Jaeger, start_collector: StartCollector
) -> None:
    gateways = [
        start_collector(
            GATEWAY,
            JAEGER_OTLP_GRPC_ENDPOINT=jaeger.otlp_grpc,
            TAIL_SAMPLING_DECISION_WAIT=f"{DECISION_WAIT}s",
            TAIL_SAMPLING_PERCENTAGE=str(PERCENTAGE),
            BATCH_TIMEOUT="200ms",
        )
        for _ in range(2)
    ]
    static = "[" + ", ".join(g.grpc_address for g in gateways) + "]"
    agents = [
        start_collector(
            AGENT,
            GATEWAY_DNS_ENABLED="false",
            GATEWAY_STATIC_ENABLED="true",
            GATEWAY_HOSTNAMES=static,
            BATCH_TIMEOUT="200ms",
        )
        for _ in range(2)
    ]
    front = kilostar_otel.configure(
        service_name="kilostar-gw-front",
        endpoint=agents[0].grpc_endpoint,
        protocol="grpc",
        set_global=False,
    )
    back = kilostar_otel.configure(
        service_name="kilostar-gw-back",
        endpoint=agents[1].grpc_endpoint,
        protocol="grpc",
        set_global=False,
    )
    try:
        load = run_mixed_load(front, back, workflows=15, errors=15, plain=300, tag="gw")
    finally:
        front.shutdown()
        back.shutdown()
    found = collect(jaeger, load, "kilostar-gw-front", settle=DECISION_WAIT + 2)
    assert_sampled_as_configured(found, load, PERCENTAGE)
    for trace in found.values():
        assert {trace.service(s) for s in trace.spans.values()} == {
            "kilostar-gw-front",
            "kilostar-gw-back",
        }

    # Each agent received its service's spans and each gateway got a share of the traces.
    sent = 2 * 330 + 3 * 15
    assert sum(a.metric("otelcol_receiver_accepted_spans") for a in agents) == sent
    shares = [g.metric("otelcol_receiver_accepted_spans") for g in gateways]
    assert sum(shares) == sent
    assert min(shares) > sent / 4, f"the trace ids were not spread over the gateways: {shares}"
