"""Tests of keras_circle.callbacks.RetrievalEvaluation on tiny Dense models."""

import glob
import os

import keras
import pytest
import tensorflow as tf

from keras_circle import callbacks
from keras_circle import retrieval


def _data(rng, n=96, classes=6, dim=8):
    labels = rng.integers(0, classes, n)
    centers = rng.standard_normal((classes, dim))
    x = (centers[labels] + 0.5 * rng.standard_normal((n, dim))).astype("float32")
    return x, labels


def _embedder(dim=8):
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(4)])


def _event_scalars(logdir):
    """`{tag: [values]}` of every scalar in the event files under `logdir`."""
    scalars = {}
    for path in glob.glob(
        os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True
    ):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor))
                )
    return scalars


class _Recorder(keras.callbacks.Callback):
    """Stands for any callback after ours: keeps what `logs` held."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))


_KEYS = [
    "val_recall_at_1",
    "val_recall_at_2",
    "val_recall_at_4",
    "val_recall_at_8",
    "val_map_at_r",
]


def _fit(rng, extra_callbacks):
    x, labels = _data(rng)
    model = _embedder()
    model.compile(optimizer="adam", loss="mse")
    callback = callbacks.RetrievalEvaluation(None, x, labels, batch_size=32)
    history = model.fit(
        x,
        rng.standard_normal((96, 4)),
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=[callback, *extra_callbacks],
    )
    return model, x, labels, history


def test_history_and_later_callbacks(rng, capsys):
    recorder = _Recorder()
    model, x, labels, history = _fit(rng, [recorder])
    for key in _KEYS:
        assert len(history.history[key]) == 2
        assert [logs[key] for logs in recorder.seen] == history.history[key]
    # The last values are those of the trained model.
    embeddings = model.predict(x, verbose=0)
    assert history.history["val_recall_at_1"][-1] == pytest.approx(
        retrieval.recall_at_k(embeddings, labels, ks=(1,))[1]
    )
    assert history.history["val_map_at_r"][-1] == pytest.approx(
        retrieval.map_at_r(embeddings, labels)
    )
    assert "Epoch 2: retrieval: val_recall_at_1:" in capsys.readouterr().out


@pytest.mark.parametrize("fit_verbose", [1, 2])
def test_metrics_print_once_with_fit_progress(rng, capsys, fit_verbose):
    x, labels = _data(rng)
    model = _embedder()
    model.compile(optimizer="adam", loss="mse")
    model.fit(
        x,
        rng.standard_normal((96, 4)),
        epochs=2,
        batch_size=32,
        verbose=fit_verbose,
        callbacks=[callbacks.RetrievalEvaluation(None, x, labels, batch_size=32)],
    )
    out = capsys.readouterr().out
    # fit's epoch lines show the results; the callback adds no second copy.
    assert out.count("val_recall_at_1:") == 2
    assert "retrieval:" not in out


def test_tensorboard_event_file(tmp_path, rng):
    # Keras's TensorBoard writes through the `tensorboard` package, which the
    # pinned stack does not install; CI runs this where it is present.
    pytest.importorskip("tensorboard")
    board = keras.callbacks.TensorBoard(str(tmp_path))
    _, _, _, history = _fit(rng, [board])
    scalars = _event_scalars(os.path.join(str(tmp_path), "validation"))
    for key in _KEYS:
        tag = "epoch_" + key[len("val_") :]
        assert scalars[tag] == pytest.approx(history.history[key], abs=1e-6)


def test_dataset_with_labels_every_n_epochs(rng):
    x, labels = _data(rng)
    embedder = _embedder()
    trainer = keras.Sequential([embedder, keras.layers.Dense(6)])
    trainer.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(20)
    callback = callbacks.RetrievalEvaluation(
        embedder,
        dataset,
        None,
        every_n_epochs=2,
        ks=(1, 3),
        prefix="test_",
        verbose=0,
    )
    history = trainer.fit(x, labels, epochs=3, verbose=0, callbacks=[callback])
    assert len(history.history["test_recall_at_1"]) == 1
    assert set(callback.evaluate()) == {
        "test_recall_at_1",
        "test_recall_at_3",
        "test_map_at_r",
    }
    # Separate labels with an unlabelled dataset give the same numbers.
    inputs_only = tf.data.Dataset.from_tensor_slices(x).batch(20)
    other = callbacks.RetrievalEvaluation(
        embedder, inputs_only, labels, ks=(1, 3), prefix="test_"
    )
    assert other.evaluate() == pytest.approx(callback.evaluate())


def test_bad_arguments(rng):
    x, labels = _data(rng)
    with pytest.raises(ValueError, match="`every_n_epochs`"):
        callbacks.RetrievalEvaluation(None, x, labels, every_n_epochs=0)
    with pytest.raises(ValueError, match="`labels` are required"):
        callbacks.RetrievalEvaluation(None, x, None)
    with pytest.raises(ValueError, match="`ks`"):
        callbacks.RetrievalEvaluation(None, x, labels, ks=(0,))
    unlabelled = tf.data.Dataset.from_tensor_slices(x).batch(20)
    callback = callbacks.RetrievalEvaluation(_embedder(), unlabelled, None)
    with pytest.raises(ValueError, match="without labels"):
        callback.evaluate()
