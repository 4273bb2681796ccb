"""One end-to-end run per task family on small offline data (configs/small)."""

import importlib.util
import json
import pathlib

import pytest

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
    # A pair-wise run draws its test pairs against the Eq. 8 circle.
    assert (tmp_path / "plots" / "circle_boundary.png").is_file()
    assert report["metrics"]["recall_at_k"]["1"] > 0.4  # 5 unseen classes


def test_face_recognition_end_to_end(tmp_path):
    config = config_lib.load_config(
        ROOT / "configs/small/face_recognition.json", ["train.verbose=0"]
    )
    assert config.data.source == "identity_folders"
    report = _example("face_recognition").train_and_evaluate(config, tmp_path)
    _check(report, tmp_path, ["accuracy", "tar_at_far", "auc"])
    assert report["metrics"]["accuracy"] > 0.5


def test_person_reid_end_to_end(tmp_path):
    # As shipped: no data.root, the built-in Market-1501 layout.
    config = config_lib.load_config(
        ROOT / "configs/small/person_reid.json", ["train.verbose=0"]
    )
    assert config.data.root == "builtin:market1501_mini"
    report = _example("person_reid").train_and_evaluate(config, tmp_path / "run")
    _check(report, tmp_path / "run", ["mAP"], expected_steps=12)
    assert (tmp_path / "run" / "plots" / "cmc.png").is_file()
    assert "cmc_curve" not in report["metrics"]  # plotted, not reported
    # 60 queries, every one with a match on another camera.
    assert report["metrics"]["num_valid_queries"] == 60


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
