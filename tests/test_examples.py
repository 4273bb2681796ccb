"""One end-to-end run per task family on small offline data (configs/small)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from keras_circle import config as config_lib
from keras_circle import export
from keras_circle import tasks

ROOT = pathlib.Path(__file__).parents[1]


def _example(task, name="train"):
    path = ROOT / "examples" / task / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{task}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_market1501(root, ids=8, cams=3, per_cam=2):
    """A Market-1501 layout with coloured-pattern identities, 64x32 JPEGs."""
    rng = np.random.default_rng(0)
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True)
    for pid in range(1, 2 * ids + 1):
        base = rng.integers(0, 255, (4, 2, 3))
        for cam in range(1, cams + 1):
            for n in range(per_cam):
                noise = rng.integers(-20, 20, (64, 32, 3))
                image = np.clip(np.kron(base, np.ones((16, 16, 1))) + noise, 0, 255)
                jpeg = tf.io.encode_jpeg(image.astype(np.uint8)).numpy()
                name = f"{pid:04d}_c{cam}s1_{n:06d}_00.jpg"
                if pid <= ids:
                    folder = "bounding_box_train"
                else:
                    folder = "query" if (cam == 1 and n == 0) else "bounding_box_test"
                (root / folder / name).write_bytes(jpeg)
    return root


def _check(report, workdir, expected, expected_steps=20):
    assert report["steps"] == report["expected_steps"] == expected_steps
    saved = json.loads((workdir / "report.json").read_text())
    for key in expected:
        assert key in saved["metrics"]
    assert (workdir / "export" / "embedder.onnx").exists()
    assert list((workdir / "export" / "saved_model").glob("*/saved_model.pb"))
    # Served = evaluated: the export records the recipe's test-time spec.
    config = config_lib.from_dict(saved["config"])
    spec = tasks.recipe_for(config).load_data(config).preprocessing
    metadata = workdir / "export" / "saved_model" / "1" / export.METADATA_PATH
    assert json.loads(metadata.read_text())["preprocessing"] == spec
    assert list((workdir / "plots").glob("*.png"))
    assert (workdir / "model.keras").exists()


def test_fine_grained_retrieval_end_to_end(tmp_path):
    config = config_lib.load_config(
        ROOT / "configs/small/fine_grained_retrieval.json", ["train.verbose=0"]
    )
    report = _example("fine_grained_retrieval").train_and_evaluate(config, tmp_path)
    _check(report, tmp_path, ["recall_at_k", "map_at_r"])
    assert report["metrics"]["recall_at_k"]["1"] > 0.4  # 5 unseen classes


def test_face_recognition_end_to_end(tmp_path):
    config = config_lib.load_config(
        ROOT / "configs/small/face_recognition.json", ["train.verbose=0"]
    )
    report = _example("face_recognition").train_and_evaluate(config, tmp_path)
    _check(report, tmp_path, ["accuracy", "tar_at_far", "auc"])
    assert report["metrics"]["accuracy"] > 0.5


def test_person_reid_end_to_end(tmp_path):
    root = make_market1501(tmp_path / "market")
    config = config_lib.load_config(
        ROOT / "configs/small/person_reid.json",
        [f"data.root={root}", "train.verbose=0"],
    )
    report = _example("person_reid").train_and_evaluate(config, tmp_path / "run")
    _check(report, tmp_path / "run", ["mAP"], expected_steps=12)


def test_wrong_family_is_rejected(tmp_path):
    config = config_lib.load_config(ROOT / "configs/small/face_recognition.json")
    with pytest.raises(ValueError, match="person_reid"):
        _example("person_reid").train_and_evaluate(config, tmp_path)


def test_train_lib_is_a_deprecated_alias_of_train(tmp_path):
    config = config_lib.load_config(ROOT / "configs/small/face_recognition.json")
    train_lib = _example("person_reid", "train_lib")
    with pytest.warns(DeprecationWarning, match="train.py"):
        with pytest.raises(ValueError, match="person_reid"):
            train_lib.train_and_evaluate(config, tmp_path)
