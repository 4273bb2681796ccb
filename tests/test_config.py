"""The typed config schema: files, overrides, and keys rejected by name."""

import json
import pathlib

import pytest

from keras_circle import config as config_lib

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    assert config_lib.load_config(path).task in config_lib.TASKS


def test_paper_settings():
    face = config_lib.load_config(ROOT / "configs/face_recognition.json").loss
    reid = config_lib.load_config(ROOT / "configs/person_reid.json")
    fine = config_lib.load_config(ROOT / "configs/fine_grained_retrieval.json")
    assert (face.labels, face.gamma, face.margin) == ("class", 256.0, 0.25)
    assert (reid.loss.labels, reid.loss.gamma, reid.loss.margin) == (
        "class",
        128.0,
        0.25,
    )
    assert (fine.loss.labels, fine.loss.gamma, fine.loss.margin) == ("pair", 80.0, 0.4)
    assert (fine.data.p, fine.data.k) == (16, 5)


def test_overrides_parse_and_check_types():
    config = config_lib.load_config(
        ROOT / "configs/person_reid.json",
        ["train.epochs=3", "data.root=/data/m", "loss.gamma=64", "eval.ks=[1,2]"],
    )
    assert config.train.epochs == 3 and config.data.root == "/data/m"
    assert config.loss.gamma == 64.0 and isinstance(config.loss.gamma, float)
    assert config.eval.ks == [1, 2]


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epoch=3", "train.epoch"),
        ("trian.epochs=3", "trian"),
        ("train.epochs=two", "train.epochs"),
        ("train.xla=1", "train.xla"),
        ('eval.ks=[1, "a"]', "eval.ks[1]"),
        ("loss.name=cosface", "loss.name"),
        ("task=faces", "task"),
    ],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(config_lib.ConfigError, match=key.replace("[", r"\[")):
        config_lib.load_config(ROOT / "configs/person_reid.json", [override])


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"backbone": "small_cnn", "dim": 3}}))
    with pytest.raises(config_lib.ConfigError, match="model.dim"):
        config_lib.load_config(path)


def test_toml_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "person_reid"\n[train]\nepochs = 4\nxla = true\n')
    config = config_lib.load_config(path)
    assert config.train.epochs == 4 and config.train.xla is True
    assert config_lib.from_dict(config_lib.to_dict(config)) == config


def test_backup_must_divide_epoch():
    with pytest.raises(config_lib.ConfigError, match="backup_every"):
        config_lib.from_dict({"train": {"steps_per_epoch": 10, "backup_every": 3}})
