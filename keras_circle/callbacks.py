"""Keras callbacks for metric learning: evaluation, diagnostics, the history file."""

import csv
import os
import warnings

import keras
import numpy as np

from keras_circle import retrieval


def _is_batch_iterable(x):
    """True for tf.data datasets, generators and the like (not arrays)."""
    if isinstance(x, np.ndarray | dict | list | tuple) or hasattr(x, "shape"):
        return False
    return hasattr(x, "__iter__")


class RetrievalEvaluation(keras.callbacks.Callback):
    """Evaluates Recall@K and MAP@R on a held-out set every few epochs.

    At the end of every `every_n_epochs`-th epoch the embedder maps `x` to
    embeddings, and leave-one-out retrieval within that set is scored with
    `keras_circle.retrieval.recall_at_k` and `map_at_r` (the fine-grained
    retrieval protocol: the held-out classes are unseen in training). The
    results are written into `logs` as `{prefix}recall_at_{k}` and
    `{prefix}map_at_r`, so they land in `History` and, when a
    `keras.callbacks.TensorBoard` comes after this callback in the list, in
    TensorBoard (with the default `"val_"` prefix under its `validation` run,
    as `epoch_recall_at_1` and so on). Epochs that are skipped write nothing,
    like `fit(validation_freq=...)`.

    Args:
        embedder: A `keras.Model` mapping inputs to embeddings
            `(batch_size, dim)`, or `None` to use the model being trained.
        x: The held-out inputs: an array (or a dict/list of arrays for a
            multi-input embedder), or an iterable of batches such as a
            `tf.data.Dataset`, yielding `inputs` or `(inputs, labels)`. It
            must not shuffle when `labels` are passed separately.
        labels: Integer class labels `(num_samples,)`, or `None` to take them
            from the `(inputs, labels)` batches of `x`.
        every_n_epochs: Evaluate after every this many epochs. Defaults to
            `1`.
        ks: The K of Recall@K. Defaults to `(1, 2, 4, 8)`.
        batch_size: Batch size of the embedding pass over an array `x`.
            Defaults to `256`.
        prefix: Prefix of the log keys. Defaults to `"val_"`.
        verbose: Whether to print a line with the results when `fit` runs
            with `verbose=0` (otherwise `fit`'s progress output shows them,
            once). Defaults to `1`.

    Example:

    >>> callback = keras_circle.callbacks.RetrievalEvaluation(
    ...     embedder, x_test, y_test, every_n_epochs=5)
    >>> trainer.fit(x_train, y_train, epochs=50,
    ...             callbacks=[callback, keras.callbacks.TensorBoard(logdir)])
    """

    def __init__(
        self,
        embedder,
        x,
        labels,
        every_n_epochs=1,
        ks=(1, 2, 4, 8),
        batch_size=256,
        prefix="val_",
        verbose=1,
    ):
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(
                f"`every_n_epochs` must be a positive integer; got {every_n_epochs!r}."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"`batch_size` must be a positive integer; got {batch_size!r}."
            )
        if labels is None and not _is_batch_iterable(x):
            raise ValueError("`labels` are required when `x` is an array; got None.")
        self.embedder = embedder
        self.x = x
        self.labels = labels
        self.every_n_epochs = every_n_epochs
        self.ks = retrieval.checks.check_ranks(ks, "ks")
        self.batch_size = batch_size
        self.prefix = prefix
        self.verbose = verbose

    def _embed(self):
        embedder = self.embedder if self.embedder is not None else self.model
        if not _is_batch_iterable(self.x):
            embeddings = embedder.predict(self.x, batch_size=self.batch_size, verbose=0)
            return embeddings, self.labels
        embeddings, labels = [], []
        for batch in self.x:
            inputs = batch
            if isinstance(batch, tuple) and len(batch) in (2, 3):
                inputs = batch[0]
                labels.append(keras.ops.convert_to_numpy(batch[1]).reshape(-1))
            embeddings.append(
                keras.ops.convert_to_numpy(embedder.predict_on_batch(inputs))
            )
        if self.labels is not None:
            labels = self.labels
        elif not labels:
            raise ValueError(
                "`x` yields inputs without labels; pass `labels` or yield "
                "`(inputs, labels)` batches."
            )
        else:
            labels = np.concatenate(labels)
        return np.concatenate(embeddings), labels

    def evaluate(self):
        """Embeds `x` and returns `{log_key: value}` of Recall@K and MAP@R."""
        embeddings, labels = self._embed()
        recall = retrieval.recall_at_k(embeddings, labels, self.ks, verbose=0)
        results = {f"{self.prefix}recall_at_{k}": v for k, v in recall.items()}
        results[f"{self.prefix}map_at_r"] = retrieval.map_at_r(
            embeddings, labels, verbose=0
        )
        return results

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        results = self.evaluate()
        if logs is not None:
            # Mutating the shared dict is how later callbacks see the values.
            logs.update(results)
        # `fit`'s own progress output (verbose 1 or 2) prints `logs`, these
        # results included: a line of ours would print them twice.
        if self.verbose and not (self.params or {}).get("verbose"):
            line = " - ".join(f"{k}: {v:.4f}" for k, v in results.items())
            print(f"Epoch {epoch + 1}: retrieval: {line}")


class ValidAnchorCheck(keras.callbacks.Callback):
    """Warns once when most anchors of an epoch had no positive or no negative.

    Reads `valid_anchors` (from `keras_circle.metrics.circle_statistics`)
    from the logs at the end of each epoch. Below `threshold`, most anchors
    had no loss: with random batches over many classes an anchor rarely meets
    a sample of its own class, so the loss trains on few anchors, or none
    (whenever more than half the batches have no valid anchor,
    `valid_anchors` is below 0.5). It warns once per callback with
    `UserWarning` and points to P x K sampling. Epochs whose logs lack
    `valid_anchors` are ignored.

    Args:
        threshold: Warn when `valid_anchors` is below this. Defaults to `0.5`.

    Example:

    >>> model.compile(loss=keras_circle.CircleLoss(),
    ...               metrics=keras_circle.metrics.circle_statistics())
    >>> model.fit(x, y, callbacks=[keras_circle.callbacks.ValidAnchorCheck()])
    """

    def __init__(self, threshold=0.5):
        super().__init__()
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"`threshold` must be a number; got {threshold!r}.")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` must be in (0, 1]; got {threshold!r}.")
        self.threshold = float(threshold)
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("valid_anchors")
        if self.warned or value is None:
            return
        value = float(np.asarray(value))
        if not value < self.threshold:  # NaN is the divergence guards' to report
            return
        self.warned = True
        warnings.warn(
            f"Epoch {epoch + 1}: valid_anchors = {value:.3f}: most anchors had no "
            "positive (another sample of their class) or no negative in their "
            "batch, so they gave no loss. Sample P x K batches (P classes, "
            "K >= 2 samples each) with `keras_circle.data.pk_batches`, or use a "
            "class-level loss (`keras_circle.ClassCircleLoss` on "
            "`keras_circle.CosineProxies`).",
            UserWarning,
            stacklevel=2,
        )


class HistoryCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` without columns that are always empty.

    Keras's logger adds a `val_<name>` column for every logged name when the
    first epoch has no validation value, and those columns stay `NA` in a
    run without validation. This one writes the names that are logged: those
    of the first epoch, and a name first logged later (an evaluation every
    few epochs) adds its column then, the file being rewritten with `NA` in
    the earlier rows. Appending to an existing file keeps that file's
    columns, so a resumed run's rows line up with its header.

    Args:
        filename: The CSV file.
        separator: Defaults to `","`.
        append: Append to an existing file. Defaults to `False`.
    """

    def on_train_begin(self, logs=None):
        header = None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
        super().on_train_begin(logs)
        if header and header[0] == "epoch":
            self.keys = header[1:]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        new = sorted(k for k in logs if k not in self.keys)
        if new:
            self._add_columns(new)
        super().on_epoch_end(epoch, logs)

    def _add_columns(self, names):
        self.keys = [*self.keys, *names]
        if self.writer is None and not os.path.exists(self.filename):
            return
        self.csv_file.close()
        with open(self.filename, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=self.sep))
        with open(self.filename, "w", newline="") as f:
            writer = csv.DictWriter(
                f, ["epoch", *self.keys], restval="NA", delimiter=self.sep
            )
            writer.writeheader()
            writer.writerows(rows)
        # The base class makes a new writer on the reopened file, headerless.
        self.csv_file = open(self.filename, "a", newline="")  # noqa: SIM115
        self.writer = None
        self.append_header = False
