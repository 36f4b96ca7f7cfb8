"""JSON logs and the Prometheus metrics both services share (per-RPC calls and latency)."""

from __future__ import annotations

import logging
import sys

from prometheus_client import Counter, Histogram, start_http_server
from pythonjsonlogger.json import JsonFormatter

RPC_HANDLED = Counter(
    "facesearch_grpc_server_handled_total",
    "RPCs completed, by service, method and status code.",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "facesearch_grpc_server_handling_seconds",
    "Time from the start of an RPC to its end, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stderr, as log collectors expect."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serves /metrics on `host`:`port` (0 = any free port); returns the port bound."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
