"""Seeds 001 and 002's REST call (`requests.post(...:predict, json={"instances": ...})`)
with the client: the same route and JSON, numpy arrays of the model's dtype back.

    python rest_predict.py [--rest http://localhost:8501] [--model my_model]
"""

import argparse

import numpy as np

from pyserving_client import Client


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rest", default="http://localhost:8501")
    parser.add_argument("--model", default="my_model")
    args = parser.parse_args(argv)

    # seed 002: one 28x28 grayscale image, shaped (1, 28, 28, 1)
    test_img = np.random.default_rng(0).integers(0, 256, (1, 28, 28, 1)).astype(np.float32) / 255.0
    with Client(args.rest) as client:
        outputs = client.predict(args.model, test_img)
    (predictions,) = outputs.values()
    print(f"Prediction: {int(np.argmax(predictions[0]))}")


if __name__ == "__main__":
    main()
