"""Seed 004's object detection call, whose outputs it read with `tf.make_ndarray`: with the
client every output already is a numpy array of the right shape.

    python detection.py [--grpc localhost:8500] [--model ssd-mbv2-coco]
"""

import argparse

import numpy as np

from pyserving_client import Client


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", default="localhost:8500")
    parser.add_argument("--model", default="ssd-mbv2-coco")
    args = parser.parse_args(argv)

    img_arr = np.random.default_rng(3).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    with Client(args.grpc) as client:
        result = client.predict(args.model, {"inputs": img_arr}, timeout=10.0)
    boxes = result["detection_boxes"]
    classes = result["detection_classes"]
    scores = result["detection_scores"]
    no_dets = result["num_detections"]
    print("boxes", boxes.shape, "classes", classes.shape, "scores", scores.shape, "detections", int(no_dets[0]))


if __name__ == "__main__":
    main()
