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


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=-2", "train.epochs"),
        ("train.backup_every=-5", "train.backup_every"),
        ("train.steps_per_epoch=-1", "train.steps_per_epoch"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.lr_decay_at=[0.5, 1.5]", "train.lr_decay_at[1]"),
        ("train.seed=-1", "train.seed"),
        ("train.replicas=-1", "train.replicas"),
        ("train.verbose=5", "train.verbose"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.ks=[1, 0]", "eval.ks[1]"),
        ("eval.ks=[]", "eval.ks"),
        ("data.image_size=[0, 0]", "data.image_size[0]"),
        ("data.p=0", "data.p"),
        ("data.k=1", "data.k"),
        ("data.channels=2", "data.channels"),
        ("data.max_test_images=-1", "data.max_test_images"),
        ("model.embedding_dim=0", "model.embedding_dim"),
        ("model.width=0", "model.width"),
        ("loss.gamma=0", "loss.gamma"),
        ("loss.margin=-0.1", "loss.margin"),
        ("loss.margin=1.0", "loss.margin"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    pattern = f"`{key}` must".replace("[", r"\[")
    with pytest.raises(config_lib.ConfigError, match=pattern):
        config_lib.load_config(
            ROOT / "configs/small/fine_grained_retrieval.json", [override]
        )


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_rejected(text):
    with pytest.raises(
        config_lib.ConfigError, match="`train.learning_rate` must be a finite"
    ):
        config_lib.load_config(
            ROOT / "configs/person_reid.json", [f"train.learning_rate={text}"]
        )


@pytest.mark.parametrize(
    "suffix, text, key",
    [
        (".toml", "[train]\nsteps_per_epoch = 2.5\n", "train.steps_per_epoch"),
        (".json", '{"train": {"steps_per_epoch": 2.5}}', "train.steps_per_epoch"),
        (".json", '{"train": {"epochs": true}}', "train.epochs"),
        (".toml", "[eval]\nplots = 1\n", "eval.plots"),
        (".json", '{"loss": {"gamma": "80"}}', "loss.gamma"),
    ],
)
def test_file_values_are_typed_strictly(tmp_path, suffix, text, key):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError, match=f"`{key}` must be"):
        config_lib.load_config(path)


def test_fractional_steps_per_epoch_override_is_rejected():
    with pytest.raises(
        config_lib.ConfigError, match="`train.steps_per_epoch` must be int"
    ):
        config_lib.load_config(
            ROOT / "configs/person_reid.json", ["train.steps_per_epoch=2.5"]
        )


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("c.json", '{\n  "train": {"epochs": 3,}\n}\n', "line 2, column 25"),
        ("c.toml", "[train]\nepochs = \n", "line 2"),
    ],
)
def test_malformed_file_names_the_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError, match=where) as info:
        config_lib.load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("task", config_lib.TASKS)
def test_loss_defaults_come_from_the_task_preset(task):
    from keras_circle import PRESETS

    loss = config_lib.from_dict({"task": task}).loss
    preset = PRESETS[task]
    assert (loss.labels, loss.gamma, loss.margin) == (
        preset.labels,
        preset.gamma,
        preset.margin,
    )
    # A key the file gives wins over the preset.
    assert config_lib.from_dict({"task": task, "loss": {"gamma": 32}}).loss.gamma == 32


@pytest.mark.parametrize(
    "loss",
    [{"name": "arcface", "labels": "pair"}, {"name": "triplet", "labels": "class"}],
)
def test_loss_that_does_not_take_the_labels_is_rejected(loss):
    with pytest.raises(config_lib.ConfigError, match="`loss.name="):
        config_lib.from_dict({"loss": loss})


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.backbone=vgg16", "model.backbone"),
        ("data.source=imagenet", "data.source"),
        ("train.lr_schedule=linear", "train.lr_schedule"),
        ("data.channels=true", "data.channels"),
    ],
)
def test_choices_outside_the_literal_are_rejected(override, key):
    with pytest.raises(config_lib.ConfigError, match=f"`{key}` must be one of"):
        config_lib.load_config(ROOT / "configs/person_reid.json", [override])


def test_flip_test_and_rerank_are_off_by_default_and_set_from_the_command_line():
    config = config_lib.load_config(
        ROOT / "configs/small/person_reid.json",
        ["eval.flip_test=true", "eval.rerank=true"],
    )
    assert config.eval.flip_test and config.eval.rerank
    default = config_lib.from_dict({"task": "person_reid"})
    assert not default.eval.flip_test and not default.eval.rerank


@pytest.mark.parametrize("key", ["flip_test", "rerank"])
def test_reid_evaluation_options_are_rejected_for_other_tasks(key):
    with pytest.raises(config_lib.ConfigError, match=f"`eval.{key}` is a person re-ID"):
        config_lib.from_dict({"task": "face_recognition", "eval": {key: True}})
