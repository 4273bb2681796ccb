"""TensorFlow-only (extra `[tensorflow]`): a custom training loop for every `tf.distribute` strategy.

Keras 3 `Model.fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras 20585). `train_loop` runs the same step (forward, loss,
gradients summed across replicas, optimizer update) under that strategy, under
`MirroredStrategy` and under the default strategy, with checkpoints that a
restarted job resumes from.
"""

import math
import os

import keras
import tensorflow as tf

from keras_circle import console


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss (or weights): it diverged.

    Attributes:
        step: The 1-based global step where it was seen.
        detail: What was seen (the loss value, or the loss's own message).
    """

    def __init__(self, step, detail, where=""):
        self.step = step
        self.detail = detail.rstrip(".")
        super().__init__(
            f"training diverged at step {step}{where}: {self.detail}. Try a lower "
            "`train.learning_rate` (or float32 instead of mixed precision)."
        )


def is_non_finite_error(error):
    """True for a TensorFlow error raised by a loss's own NaN/Inf check.

    keras_circle losses assert finite inputs with `tf.debugging.Assert`; in a
    graph that surfaces as `InvalidArgumentError` with "NaN" in its message.
    """
    return isinstance(error, tf.errors.InvalidArgumentError) and "NaN" in str(error)


def assertion_message(error):
    """The first line of a `tf.debugging.Assert` message, without the graph dump."""
    text = str(error)
    start = text.find("assertion failed: [")
    if start < 0:
        return text.strip().splitlines()[0]
    return text[start + len("assertion failed: [") :].split("]")[0]


def _is_chief(strategy):
    """True on the worker that writes checkpoints and logs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return (
        task_type is None
        or task_type == "chief"
        or (
            task_type == "worker"
            and task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
    )


def _write_dir(checkpoint_dir, strategy):
    # Every worker must take part in a save (it is a collective); only the
    # chief writes where the job resumes from, the others a private folder.
    if _is_chief(strategy):
        return checkpoint_dir
    resolver = strategy.cluster_resolver
    return os.path.join(
        checkpoint_dir, f".worker_{resolver.task_type}_{resolver.task_id}"
    )


def train_loop(
    strategy,
    model_fn,
    loss,
    optimizer_fn,
    dataset_fn,
    steps,
    checkpoint_dir=None,
    checkpoint_every=100,
    max_to_keep=3,
    verbose=1,
):
    """Trains a model for `steps` steps under any `tf.distribute` strategy.

    Each step runs `model(x, training=True)` and `loss(y, y_pred)` on every
    replica and applies the gradients, which the optimizer sums across
    replicas. keras_circle losses reduce over the global batch inside a
    replica (the pair-wise `CircleLoss` compares each replica's anchors with
    the whole global batch), so a step equals the same global batch on one
    device. Model regularization losses are divided by the number of replicas.

    With `checkpoint_dir`, the model, the optimizer (its `iterations` is the
    step counter) and nothing else are saved with `tf.train.CheckpointManager`
    every `checkpoint_every` steps and at the end; TensorFlow writes each
    checkpoint to a temporary name and renames it, so a crash never leaves a
    half-written latest checkpoint. A restarted call restores the latest
    checkpoint, skips the batches already consumed (`dataset_fn` must be
    deterministic) and runs the remaining steps up to `steps`. Under
    `MultiWorkerMirroredStrategy` every worker restores from `checkpoint_dir`
    (a shared file system) and the non-chief workers write their part of the
    collective save to a private sub-folder.

    Args:
        strategy: A `tf.distribute.Strategy`, e.g. `tf.distribute.get_strategy()`,
            `MirroredStrategy()` or `MultiWorkerMirroredStrategy()` (create the
            latter at program start).
        model_fn: Builds and returns a built `keras.Model`; called in the
            strategy's scope.
        loss: A `keras.losses.Loss` (or a callable `(y_true, y_pred)`).
        optimizer_fn: Returns a `keras.optimizers.Optimizer`; called in the scope.
        dataset_fn: `dataset_fn(input_context) -> tf.data.Dataset` of
            `(x, y)` batches of `input_context.get_per_replica_batch_size(
            global_batch_size)` samples for the input pipeline
            `input_context.input_pipeline_id`, as for
            `tf.distribute.Strategy.distribute_datasets_from_function`. It must
            yield at least `steps` batches.
        steps: Total number of training steps.
        checkpoint_dir: Folder of the checkpoints, or `None` for none.
            Defaults to `None`.
        checkpoint_every: Steps between checkpoints. Defaults to `100`.
        max_to_keep: Checkpoints kept. Defaults to `3`.
        verbose: `1` shows a `keras.utils.Progbar` on the chief, `0` nothing.
            Defaults to `1`.

    Returns:
        `(model, history)`: the trained model and a dict with the global loss of
        each step run by this call under `"loss"` and the steps under `"step"`.

    Raises:
        TrainingDivergedError: a step's loss is NaN or infinite, or the loss's
            own finite-input check fails. Nothing of that step is checkpointed,
            so the latest checkpoint stays the last finite one.

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model, history = keras_circle.training.train_loop(
        strategy,
        model_fn=lambda: build_embedder(),
        loss=keras_circle.CircleLoss(),
        optimizer_fn=lambda: keras.optimizers.SGD(0.01),
        dataset_fn=make_dataset,
        steps=1000,
        checkpoint_dir="/shared/run1",
    )
    ```
    """
    with strategy.scope():
        model = model_fn()
        optimizer = optimizer_fn()
        optimizer.build(model.trainable_variables)
    manager = None
    start = 0
    if checkpoint_dir is not None:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest is not None:
            checkpoint.restore(latest).assert_existing_objects_matched()
            start = int(optimizer.iterations.numpy())
        manager = tf.train.CheckpointManager(
            checkpoint, _write_dir(checkpoint_dir, strategy), max_to_keep=max_to_keep
        )

    def skipped_dataset_fn(input_context):
        return dataset_fn(input_context).skip(start)

    dataset = strategy.distribute_datasets_from_function(skipped_dataset_fn)
    iterator = iter(dataset)
    replicas = strategy.num_replicas_in_sync

    def step_fn(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            value = loss(y, y_pred)
            if model.losses:
                value = value + tf.add_n(model.losses) / replicas
        variables = model.trainable_variables
        gradients = tape.gradient(value, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return value

    @tf.function
    def train_step(iterator):
        per_replica = strategy.run(step_fn, args=next(iterator))
        # Per-replica losses are shares of the global mean: their sum is it.
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    history = {"loss": [], "step": []}
    show = verbose and _is_chief(strategy)
    progbar = None
    if show:
        progbar = keras.utils.Progbar(
            steps, verbose=console.progress_verbosity(int(verbose))
        )
    if progbar is not None and start:
        progbar.update(start)
    for step in range(start + 1, steps + 1):
        try:
            value = float(train_step(iterator))
        except tf.errors.InvalidArgumentError as error:
            if not is_non_finite_error(error):
                raise
            raise TrainingDivergedError(step, assertion_message(error)) from None
        if not math.isfinite(value):
            raise TrainingDivergedError(step, f"loss {value}")
        history["loss"].append(value)
        history["step"].append(step)
        if progbar is not None:
            progbar.update(step, values=[("loss", value)])
        if manager is not None and (step % checkpoint_every == 0 or step == steps):
            manager.save(checkpoint_number=step)
    return model, history
