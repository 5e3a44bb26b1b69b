"""The in-process limit: a model's signature called directly, no server in between.

    python bench/inprocess.py MODEL_DIR INPUT_ALIAS SHAPE... [--batches 1,32,64] [--seconds 2]

Loads the SavedModel version directory the way the server does (`SavedModelLoader`, one
session, a prepared callable per signature) and times `TensorFlowServable.run` on random
float32 inputs of shape [batch, *SHAPE] for each batch size: median seconds per call and
images (rows) per second, the calls back to back (or, with `--gap-us`, each after an idle
sleep, as a sequential client's requests reach a server). Prints one JSON object keyed by
batch size. Run it pinned to the core the server gets, so the ratios compare like with like.

With `--serve N` it loads the model, makes N random rows, calls the signature on them three
times, prints `ready`, and then makes one call per line read from stdin, printing its
seconds: `bench/run.py` uses it to time the in-process 10,000-image call at the same moment
of the run as the server's (after the same minutes of other load).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import numpy as np

from pyserving.process import keep_freed_memory
from pyserving.platforms.tensorflow.saved_model import SavedModelLoader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("alias")
    ap.add_argument("shape", type=int, nargs="*")
    ap.add_argument("--batches", default="1,32,64")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per batch size")
    ap.add_argument("--serve", type=int, default=0, help="answer stdin lines with one call of this many rows")
    ap.add_argument("--gap-us", type=float, default=0.0,
                    help="sleep this long before each timed call (the idle gap a sequential client leaves)")
    args = ap.parse_args()
    keep_freed_memory()  # the server's allocator setting, so the limit gets it too
    loader = SavedModelLoader(args.model_dir)
    loader.load()
    servable = loader.servable()
    signature = servable.signatures["serving_default"]
    gc.collect()
    gc.freeze()  # as the server does once its models are loaded
    rng = np.random.default_rng(0)
    if args.serve:
        inputs = {args.alias: rng.random((args.serve, *args.shape), dtype=np.float32)}
        for _ in range(3):
            servable.run(signature, inputs)
        print("ready", flush=True)
        for _ in sys.stdin:
            t0 = time.perf_counter()
            servable.run(signature, inputs)
            print(time.perf_counter() - t0, flush=True)
        return
    result = {}
    for batch in (int(b) for b in args.batches.split(",")):
        x = rng.random((batch, *args.shape), dtype=np.float32)
        inputs = {args.alias: x}
        for _ in range(3):
            servable.run(signature, inputs)
        times: list[float] = []
        budget_end = time.perf_counter() + args.seconds
        while len(times) < 5 or (time.perf_counter() < budget_end and len(times) < 20000):
            if args.gap_us:
                time.sleep(args.gap_us / 1e6)
            t0 = time.perf_counter()
            servable.run(signature, inputs)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        times.sort()
        result[str(batch)] = {
            "calls": len(times),
            "median_s": median,
            "p99_s": times[min(len(times) - 1, int(0.99 * len(times)))],
            "rows_per_s": batch / median,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
