"""The fine-grained recipe on a TFDS-shaped set: served = evaluated."""

import json

import numpy as np
import tensorflow as tf

from keras_circle import config as config_lib
from keras_circle import data
from keras_circle import export
from keras_circle import tasks


def _fake_tfds(classes, per_class=4, seed=0):
    """`{"image": PNG bytes (40x48, not square), "label"}` like load_fine_grained."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in classes:
        base = rng.integers(0, 255, (5, 6, 3))
        for _ in range(per_class):
            noise = rng.integers(-20, 20, (40, 48, 3))
            image = np.clip(np.kron(base, np.ones((8, 8, 1))) + noise, 0, 255)
            images.append(tf.io.encode_png(image.astype(np.uint8)).numpy())
            labels.append(label)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": np.asarray(labels, np.int64)}
    )


def test_tfds_export_records_the_evaluated_crop_spec(tmp_path, monkeypatch):
    """Evaluation crops (shorter side 256, centre 32); the export must too.

    The export once recorded a whole-image resize for this recipe, so the
    served embeddings of a non-square image differed from the evaluated ones.
    """

    def load_fine_grained(name, split, *, data_dir=None):
        return _fake_tfds(range(6) if split == "train" else range(6, 10))

    monkeypatch.setattr(data, "load_fine_grained", load_fine_grained)
    config = config_lib.from_dict(
        {
            "task": "fine_grained_retrieval",
            "data": {"source": "tfds", "p": 2, "k": 4, "image_size": [32, 32]},
            "model": {"backbone": "small_cnn", "embedding_dim": 8, "width": 4},
            "train": {"epochs": 1, "steps_per_epoch": 2, "optimizer": "adam",
                      "learning_rate": 0.002, "verbose": 0, "tensorboard": False},
            "eval": {"ks": [1], "batch_size": 16, "plots": False,
                     "export_onnx": False},
        }
    )  # fmt: skip
    report = tasks.train_and_evaluate(config, tmp_path)
    spec = data.fine_grained_spec(32, normalization="symmetric")
    assert spec["resize"] == "resize_shorter_then_center_crop"
    assert tasks.recipe_for(config).load_data(config).preprocessing == spec
    version = tmp_path / "export" / "saved_model" / "1"
    metadata = json.loads((version / export.METADATA_PATH).read_text())
    assert metadata["preprocessing"] == spec
    assert report["artifacts"]["saved_model"] == str(version)
