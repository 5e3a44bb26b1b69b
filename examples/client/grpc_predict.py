"""Seeds 003 and 004's gRPC calls (`PredictRequest` + `tf.make_tensor_proto` +
`stub.Predict(request, 10.0)`), without TensorFlow: numpy in, numpy out, same timeout.

    python grpc_predict.py [--grpc localhost:8500] [--model mnist-serving]
"""

import argparse

import numpy as np

from pyserving_client import Client


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", default="localhost:8500")
    parser.add_argument("--model", default="mnist-serving")
    args = parser.parse_args(argv)

    x_test = np.random.default_rng(0).random((10000, 28, 28, 1), dtype=np.float32)
    with Client(args.grpc) as client:
        # seed 004's grpc_infer: the whole test set in one 31 MB request, then one image
        probs = client.predict(args.model, {"input_image": x_test}, signature="serving_default",
                               timeout=10.0)["y_pred"]
        one = client.predict(args.model, {"input_image": x_test[:1]}, timeout=10.0)["y_pred"]
    print("shape:", probs.shape, "first:", int(probs[0].argmax()), "single:", int(one[0].argmax()))


if __name__ == "__main__":
    main()
