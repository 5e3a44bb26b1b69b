"""Write the client tests' models and their model config file (run by the server's Python,
which has TensorFlow): python make_models.py OUT_DIR -> OUT_DIR/models.config."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

import modelgen  # noqa: E402

MODELS = {
    "identity": modelgen.make_identity_model,
    "mnist": modelgen.make_mnist_cnn,
    "image": modelgen.make_image_bytes_model,
    "siamese": modelgen.make_siamese_model,
    "detection": modelgen.make_detection_model,
    "classifier": modelgen.make_classifier_model,
    "slow": modelgen.make_slow_model,
}


def main(out: Path) -> None:
    entries = []
    for name, make in MODELS.items():
        make(out / name, 1)
        entries.append(f'config {{ name: "{name}" base_path: "{out / name}" model_platform: "tensorflow" }}')
    hpt = REPO / "examples" / "models" / "half_plus_two"
    entries.append(f'config {{ name: "hpt" base_path: "{hpt}" model_platform: "tensorflow" '
                   'version_labels { key: "stable" value: 1 } }')
    (out / "models.config").write_text("model_config_list {\n  " + "\n  ".join(entries) + "\n}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
