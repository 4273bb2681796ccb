"""The task families' recipes: which one runs, the data each loads, the loss."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from keras_circle import config as config_lib
from keras_circle import data
from keras_circle import tasks
from keras_circle.pipeline import datasets
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline import run_folder

ROOT = pathlib.Path(__file__).parents[2]


@pytest.mark.parametrize("task", config_lib.TASKS)
def test_recipe_for_names_the_recipe_of_the_task(task):
    recipe = tasks.recipe_for(config_lib.from_dict({"task": task}))
    assert recipe.task == task
    assert recipe is getattr(tasks, task).RECIPE


@pytest.mark.parametrize(
    "task, source",
    [
        ("face_recognition", "market1501"),
        ("person_reid", "tfds"),
        ("fine_grained_retrieval", "identity_folders"),
    ],
)
def test_data_set_of_another_family_is_rejected(task, source):
    config = config_lib.from_dict({"task": task, "data": {"source": source}})
    with pytest.raises(config_lib.ConfigError, match=f"`data.source` '{source}'"):
        tasks.recipe_for(config).load_data(config)


def test_fashion_mnist_test_time_path_scales_resizes_and_repeats_grey():
    config = config_lib.from_dict(
        {
            "data": {"image_size": [32, 32], "channels": 3, "max_test_images": 4},
            # small_cnn takes [0, 1]; ImageNet backbones their own convention.
            "model": {"backbone": "small_cnn"},
        }
    )
    task_data = tasks.fine_grained_retrieval.load_data(config)
    images, _, _ = task_data.eval_sets["test"]
    assert task_data.preprocessing == data.make_spec([32, 32], channels=3)
    image, _ = task_data.preprocess_test(images[0], 0)
    expected = tf.image.resize(images[0][..., None] / 255.0, (32, 32))
    np.testing.assert_allclose(image, tf.repeat(expected, 3, axis=-1), atol=1e-6)


def test_reid_on_fashion_mnist_has_query_and_gallery_on_other_cameras():
    config = config_lib.from_dict(
        {
            "task": "person_reid",
            "data": {"channels": 1, "max_test_images": 10},
        }
    )
    sets = tasks.person_reid.load_data(config).eval_sets
    assert set(sets) == {"query", "gallery"}
    assert len(sets["query"][0]) == len(sets["gallery"][0]) == 5
    assert set(sets["query"][2]) == {1} and set(sets["gallery"][2]) == {2}


def test_keras_circle_peer_trains_on_unit_embeddings():
    config = config_lib.from_dict(
        {
            "loss": {"name": "keras_circle", "labels": "pair"},
            "model": {"backbone": "small_cnn", "embedding_dim": 8},
            "data": {"image_size": [28, 28], "channels": 1},
        }
    )
    trainer, embedder = models.build_models(config, num_classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    norms = np.linalg.norm(np.asarray(trainer(x)), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert trainer.input is embedder.input


@pytest.mark.parametrize(
    "name, labels, cls",
    [
        ("circle", "class", "ClassCircleLoss"),
        ("am_softmax", "class", "AMSoftmaxLoss"),
        ("arcface", "class", "ArcFaceLoss"),
        ("circle", "pair", "CircleLoss"),
        ("triplet", "pair", "TripletLoss"),
        ("keras_circle", "pair", "Circle"),
    ],
)
def test_build_loss_gives_the_named_loss(name, labels, cls):
    config = config_lib.from_dict({"loss": {"name": name, "labels": labels}})
    assert type(models.build_loss(config)).__name__ == cls


@pytest.mark.parametrize(
    "schedule, cls", [("cosine", "CosineDecay"), ("step", "PiecewiseConstantDecay")]
)
def test_lr_schedule_is_the_one_named(schedule, cls):
    train = {"optimizer": "adam", "learning_rate": 0.002, "lr_schedule": schedule}
    config = config_lib.from_dict({"train": train})
    rate = models.build_optimizer(config, 100).get_config()["learning_rate"]
    assert rate["class_name"] == cls
    if schedule == "cosine":
        assert rate["config"]["decay_steps"] == 100
        assert rate["config"]["initial_learning_rate"] == 0.002


def test_example_entry_point_runs_its_own_recipe(tmp_path):
    """`examples/person_reid/train.py CONFIG`: a face config is refused early."""
    config = str(ROOT / "configs/small/face_recognition.json")
    argv = [config, "--workdir", str(tmp_path / "run")]
    with pytest.raises(config_lib.ConfigError, match="'person_reid'"):
        tasks.example_main(tasks.person_reid.RECIPE, argv)
    assert not (tmp_path / "run").exists()


def test_example_train_and_evaluate_runs_its_own_recipe(tmp_path):
    """`train.train_and_evaluate` of an example: named for its recipe, refuses others."""
    train_and_evaluate = tasks.example_train_and_evaluate(tasks.person_reid.RECIPE)
    assert "person_reid" in train_and_evaluate.__doc__
    config = config_lib.load_config(ROOT / "configs/small/face_recognition.json")
    with pytest.raises(config_lib.ConfigError, match="'person_reid'"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_loss_plot_is_drawn_from_the_history_read_once(tmp_path):
    """`read_history` keeps a round without loss as None; the report plots it."""
    (tmp_path / "history.csv").write_text("epoch,loss\n0,2.5\n1,NA\n2,1.5\n")
    history = run_folder.read_history(tmp_path)
    assert history == {"epoch": [0.0, 1.0, 2.0], "loss": [2.5, None, 1.5]}
    (tmp_path / "history.csv").unlink()  # the plot must not read it again
    config = config_lib.load_config(ROOT / "configs/small/face_recognition.json")

    class NoMetrics:
        def evaluate(self, config, embedder, task_data, plot_dir):
            return {}

    report = evaluation.evaluate_and_report(
        config, tmp_path, None, None, NoMetrics(), history=history
    )
    assert report["artifacts"]["plots"] == [str(tmp_path / "plots" / "loss.png")]


def test_load_source_runs_the_loader_of_data_source():
    config = config_lib.from_dict({"task": "person_reid", "data": {"source": "msmt17"}})
    loaders = {"market1501": lambda c: "market", "msmt17": lambda c: c.data.source}
    assert datasets.load_source(config, "person_reid", loaders) == "msmt17"
    with pytest.raises(config_lib.ConfigError, match=r"\['market1501'\]"):
        datasets.load_source(
            config, "person_reid", {"market1501": loaders["market1501"]}
        )


@pytest.mark.parametrize(
    "name, labels, names, margin",
    [
        ("circle", "pair", ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"], 0.3),
        ("keras_circle", "pair", ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"], 0.3),
        ("triplet", "pair", ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"], 0.4),
        ("circle", "class", ["mean_target_cosine", "mean_hardest_negative_cosine"], None),
        ("arcface", "class", ["mean_target_cosine", "mean_hardest_negative_cosine"], None),
    ],
)  # fmt: skip
def test_build_metrics_gives_the_diagnostics_of_the_labels(name, labels, names, margin):
    """Pair-wise runs use their Circle margin (a triplet margin is a distance:
    Circle loss's default 0.4); class-level runs the class statistics."""
    loss = {"name": name, "labels": labels, "margin": 0.3}
    built = models.build_metrics(config_lib.from_dict({"loss": loss}))
    assert [m.name for m in built] == names
    if margin is not None:
        assert built[-1].margin == margin


def test_evaluation_scalars_flatten_the_report_metrics():
    from keras_circle.pipeline import summaries

    metrics = {
        "recall_at_k": {1: 0.5, "2": 0.75},
        "map_at_r": 0.25,
        "roc": {"fpr": [0.0, 1.0]},
        "ok": True,
        "none": None,
    }
    assert summaries.scalar_metrics(metrics) == {
        "recall_at_k/1": 0.5,
        "recall_at_k/2": 0.75,
        "map_at_r": 0.25,
    }
