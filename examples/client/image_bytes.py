"""Seed 000's gRPC call of an image model that takes encoded image bytes, without
TensorFlow: the bytes go in as they are, the probabilities come back as numpy.

    python image_bytes.py picture.png [--grpc localhost:8500] [--model model]
"""

import argparse

from pyserving_client import Client


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("--grpc", default="localhost:8500")
    parser.add_argument("--model", default="model")
    args = parser.parse_args(argv)

    with open(args.image, "rb") as f:
        image_bytes = f.read()
    with Client(args.grpc) as client:
        response = client.predict(args.model, {"image_bytes": [image_bytes]})
    probabilities = response["probabilities"]
    print("probabilities:", probabilities[0].round(4).tolist())
    print("class:", int(probabilities[0].argmax()))


if __name__ == "__main__":
    main()
