"""Seed 004's two-input model (`_grpc_client_request(img1, img2, ...)`) with the client:
two named inputs, a named signature, a timeout.

    python siamese.py [--grpc localhost:8500] [--model siamese-reid]
"""

import argparse

import numpy as np

from pyserving_client import Client


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", default="localhost:8500")
    parser.add_argument("--model", default="siamese-reid")
    args = parser.parse_args(argv)

    img = np.random.default_rng(2).random((64, 32, 3), dtype=np.float32)
    with Client(args.grpc, timeout=10) as client:
        result = client.predict(args.model, {"img1": img[np.newaxis], "img2": img[np.newaxis]},
                                signature="signature-reid")
    print("same person score:", float(result["predict"].ravel()[0]))


if __name__ == "__main__":
    main()
