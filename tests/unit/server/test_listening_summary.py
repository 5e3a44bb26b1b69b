"""The start-up line that says what is served where and what is off."""

from __future__ import annotations

import pytest

from pyserving.cli.flags import parse_flags
from pyserving.model_server import listening_summary


def _options(*args: str):
    options, unknown, _ = parse_flags(list(args))
    assert not unknown
    return options


@pytest.mark.parametrize("args, rest, metrics, line", [
    (["--port=8500", "--rest_api_port=8501"], True, "/metrics",
     "Serving gRPC on 0.0.0.0:8500, REST on 0.0.0.0:8501, Prometheus metrics at /metrics on the REST port"),
    (["--port=8500"], False, None,
     "Serving gRPC on 0.0.0.0:8500; off: REST and Prometheus metrics (--rest_api_port=0)"),
    (["--port=8500", "--rest_api_port=8500"], False, None,
     "Serving gRPC on 0.0.0.0:8500; off: REST (--rest_api_port is the gRPC --port)"),
    (["--port=0", "--rest_api_port=8501"], True, None,
     "Serving REST on 0.0.0.0:8501; off: gRPC (--port=0), Prometheus metrics (see --monitoring_config_file)"),
    (["--port=8500", "--grpc_socket_path=/tmp/s", "--ssl_config_file=/c"], False, None,
     "Serving gRPC on 0.0.0.0:8500 with TLS, gRPC on unix:/tmp/s with TLS; "
     "off: REST and Prometheus metrics (--rest_api_port=0)"),
])
def test_listening_summary(args, rest, metrics, line):
    assert listening_summary(_options(*args), rest, metrics) == line
