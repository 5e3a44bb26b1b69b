"""The floor: pyserving's HTTP and gRPC stacks answering with no request path behind them.

    python bench/floor_server.py --rest_api_port 8501 --port 8500 --answer ANSWER_JSON --grpc_answer ANSWER_PB

One process, one uvloop event loop, as the server runs: uvicorn with pyserving's own
`HttpProtocol` and the same settings (body read buffer included, since it imports
`pyserving.api.rest.server`), and a `grpc.aio` server. The REST app reads the whole body
and answers with the bytes of ANSWER_JSON; the gRPC `PredictionService.Predict` answers
with the serialized `PredictResponse` in ANSWER_PB. No routing, no JSON, no model, no
metrics, no thread hop. `bench/run.py` measures it like the real server: the time and CPU
that remain for everything pyserving does once the HTTP or gRPC stack has a request.
With `--ssl_config_file` (a text `SSLConfig`, as the server's flags take), both ports speak
TLS with the server's own contexts (`pyserving.auth.tls`): the floor under the TLS rows.
Prints `ready` once both ports listen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

import grpc  # noqa: E402
import uvicorn  # noqa: E402
import uvloop  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from pyserving.api.rest._http import HttpProtocol  # noqa: E402
from pyserving.api.rest import server as rest_server  # noqa: E402,F401  (sets uvicorn's body read buffer, as served)

_JSON = [(b"content-type", b"application/json")]


def rest_app(answer: bytes) -> Any:
    headers = [*_JSON, (b"content-length", str(len(answer)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
    return app


class FixedPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, answer: predict_pb2.PredictResponse) -> None:
        self._answer = answer

    async def Predict(self, request: predict_pb2.PredictRequest, context: Any) -> predict_pb2.PredictResponse:
        return self._answer


async def serve(args: argparse.Namespace) -> None:
    answer = open(args.answer, "rb").read()
    grpc_answer = predict_pb2.PredictResponse.FromString(open(args.grpc_answer, "rb").read())
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 2**31 - 1),
                                      ("grpc.max_receive_message_length", 2**31 - 1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(FixedPrediction(grpc_answer), server)
    tls = None
    if args.ssl_config_file:
        from pyserving.auth.tls import TlsFile

        tls = TlsFile(args.ssl_config_file, "ssl_config_file")
        server.add_secure_port(f"127.0.0.1:{args.port}", tls.grpc_credentials())
    else:
        server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    config = uvicorn.Config(rest_app(answer), host="127.0.0.1", port=args.rest_api_port, lifespan="off",
                            http=HttpProtocol, access_log=False, log_config=None, proxy_headers=False,
                            server_header=False, timeout_keep_alive=75)
    if tls is not None:
        config.load()
        config.ssl = tls.rest_context()  # as RestFrontEnd does
    rest = uvicorn.Server(config)
    rest_task = asyncio.create_task(rest.serve())
    while not rest.started:
        if rest_task.done():
            rest_task.result()
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    try:
        await rest_task  # until SIGTERM (uvicorn's own handler)
    finally:
        await server.stop(None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rest_api_port", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--answer", required=True, help="the REST answer's bytes")
    ap.add_argument("--grpc_answer", required=True, help="a serialized PredictResponse")
    ap.add_argument("--ssl_config_file", default="", help="TLS on both ports (a text SSLConfig)")
    args = ap.parse_args()
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
