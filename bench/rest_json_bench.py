"""Benchmark of the REST JSON codec on large requests and responses.

    PYTHONPATH=src python bench/rest_json_bench.py [--images 10000] [--repeat 3]

Request side: 10,000 random MNIST-shaped images (10000x28x28x1 float32) as row-format
JSON, once with full-precision floats (~170 MB) and once rounded to 4 decimals (~70 MB);
time `parse_body` + `parse_predict` + `predict_inputs` against the naive
`np.asarray(orjson.loads(body)["instances"], dtype=float32)` (with the cyclic GC on, as
in a server, and with it paused). Each figure is the best of `--repeat` runs in one
process. Response side: `encode_predict` of a 10000x10 float32 output.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import orjson

from pyserving.api.rest import request_json, response_json
from pyserving.platforms.base import Signature, TensorSpec


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    spec = TensorSpec("x", "x:0", "DT_FLOAT", np.dtype(np.float32), (-1, 28, 28, 1))
    sig = Signature("serving_default", "tensorflow/serving/predict", {"x": spec}, {})

    def ours(body: bytes) -> np.ndarray:
        doc = request_json.parse_body(body)
        name, fmt, payload = request_json.parse_predict(doc)
        return request_json.predict_inputs(fmt, payload, sig)["x"]

    def naive(body: bytes) -> np.ndarray:
        return np.asarray(orjson.loads(body)["instances"], dtype=np.float32)

    def naive_gc_paused(body: bytes) -> np.ndarray:
        gc.disable()
        try:
            return np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
        finally:
            gc.enable()

    for label, values in (("full precision", images.astype(np.float64)),
                          ("rounded to 4 decimals", np.round(images.astype(np.float64), 4))):
        body = b'{"instances": ' + orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY) + b"}"
        expected = values.astype(np.float32)
        got = ours(body)
        assert got.shape == expected.shape and np.array_equal(got, expected), "codec result differs"
        print(f"request, {label}: {len(body) / 1e6:.0f} MB")
        for name, fn in (("orjson + np.asarray (GC on)", naive),
                         ("orjson + np.asarray (GC paused)", naive_gc_paused),
                         ("request_json parse+convert", ours)):
            t = _best(lambda: fn(body), args.repeat)
            print(f"  {name:34s} {t:6.2f} s")
        del body, got

    out = rng.random((10000, 10), dtype=np.float32)
    print("response, 10000x10 float32:")
    for fmt in ("row", "columnar"):
        t = _best(lambda: response_json.encode_predict({"y": out}, fmt), max(args.repeat, 5))
        print(f"  encode_predict {fmt:8s}                {t * 1e3:6.1f} ms")
    t = _best(lambda: orjson.dumps({"predictions": out}, option=orjson.OPT_SERIALIZE_NUMPY), 5)
    print(f"  (orjson numpy, shortest repr, no TF layout) {t * 1e3:6.1f} ms")
    t = _best(lambda: np.char.mod("%g", out.astype(np.float64)), 5)
    print(f"  (np.char.mod '%g' alone)                    {t * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
