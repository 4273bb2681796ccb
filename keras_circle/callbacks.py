"""Keras callbacks that evaluate embedders during training."""

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
