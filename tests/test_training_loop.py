"""`keras_circle.training.train_loop` under the default, Mirrored and
MultiWorkerMirrored strategies, and its resumable checkpoints."""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_circle
from keras_circle.training import train_loop
from tests import training_worker as worker
from tests.mirrored import mirrored_strategy
from tests.workers import run_workers

ATOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(strategy, steps=worker.STEPS, **kwargs):
    return train_loop(
        strategy,
        worker.model_fn,
        keras_circle.CircleLoss(),
        worker.optimizer_fn,
        worker.dataset_fn,
        steps,
        verbose=0,
        **kwargs,
    )


def _max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def single():
    """The reference: the same global batches on one device."""
    model, history = _run(tf.distribute.get_strategy())
    return model.get_weights(), history


def test_mirrored_matches_single_device(single):
    weights, history = single
    model, mirrored = _run(mirrored_strategy())
    assert _max_diff(model.get_weights(), weights) < ATOL
    np.testing.assert_allclose(mirrored["loss"], history["loss"], rtol=1e-5)
    assert mirrored["step"] == [1, 2, 3, 4]


def test_resume_from_checkpoint(single, tmp_path):
    """Two steps, a 'crash', then a restart runs steps 3-4 from the checkpoint."""
    weights, history = single
    _, first = _run(tf.distribute.get_strategy(), 2, checkpoint_dir=str(tmp_path))
    assert first["step"] == [1, 2]
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    model, second = _run(tf.distribute.get_strategy(), checkpoint_dir=str(tmp_path))
    assert second["step"] == [3, 4]
    np.testing.assert_allclose(second["loss"], history["loss"][2:], rtol=1e-5)
    assert _max_diff(model.get_weights(), weights) < ATOL
    # A finished run resumes to nothing.
    _, third = _run(tf.distribute.get_strategy(), checkpoint_dir=str(tmp_path))
    assert third["step"] == []


@pytest.mark.slow
def test_two_workers_match_single_process(single, tmp_path):
    """Two `MultiWorkerMirroredStrategy` processes on 127.0.0.1 agree with one."""
    weights, history = single

    def command(index):
        out = tmp_path / f"worker{index}.npz"
        return [
            sys.executable,
            "-m",
            "tests.training_worker",
            str(out),
            str(worker.STEPS),
        ]

    run_workers(
        command,
        ROOT,
        timeout=150,
        env={"KERAS_BACKEND": "tensorflow", "PYTHONPATH": ROOT},
    )
    for index in range(2):
        result = np.load(tmp_path / f"worker{index}.npz")
        got = [result[f"w{i}"] for i in range(len(weights))]
        assert _max_diff(got, weights) < ATOL
        np.testing.assert_allclose(result["loss"], history["loss"], rtol=1e-5)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_loss_stops_the_loop_before_its_checkpoint(tmp_path, poison):
    """A loss that turns non-finite at step 3 stops the loop there, naming it."""
    from keras_circle.training import TrainingDivergedError

    circle = keras_circle.CircleLoss()
    calls = tf.Variable(0)

    def loss(y_true, y_pred):
        bad = tf.equal(calls.assign_add(1), 3)
        return circle(y_true, y_pred) + tf.where(bad, poison, 0.0)

    with pytest.raises(TrainingDivergedError, match="at step 3: loss") as info:
        train_loop(
            tf.distribute.get_strategy(),
            worker.model_fn,
            loss,
            worker.optimizer_fn,
            worker.dataset_fn,
            worker.STEPS,
            checkpoint_dir=str(tmp_path),
            checkpoint_every=2,
            verbose=0,
        )
    assert info.value.step == 3
    # The step-2 checkpoint stays the latest: nothing of step 3 was saved.
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
