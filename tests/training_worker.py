"""Model, data and a worker entry point shared by the training-loop tests.

`python -m tests.training_worker OUT.npz STEPS` runs `train_loop` under
`MultiWorkerMirroredStrategy` (one CPU replica per process, `TF_CONFIG` from the
environment) and writes the final weights to `OUT.npz` on the chief.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 16
STEPS = 4


def model_fn():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        12, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1)
    )(inputs)
    outputs = keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotUniform(2)
    )(hidden)
    return keras.Model(inputs, outputs)


def optimizer_fn():
    return keras.optimizers.SGD(0.5)


def global_batches(steps=STEPS):
    """`steps` global batches: P x K labels, in an order that is sorted by class
    within each half, so replica-local losses would differ from global ones."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(4), 4)
    y = np.stack([rng.permutation(4)[labels] for _ in range(steps)]).astype("int32")
    x = rng.normal(size=(steps, GLOBAL_BATCH, 6)) + 0.5 * y[..., None]
    return x.astype("float32"), y


def dataset_fn(input_context):
    """This input pipeline's rows of every global batch, in per-replica batches.

    With one pipeline for two replicas (`MirroredStrategy`) the replicas take
    consecutive batches: rows 0-7 and 8-15 of each global batch.
    """
    x, y = global_batches()
    n, k = input_context.num_input_pipelines, input_context.input_pipeline_id
    rows = slice(k * GLOBAL_BATCH // n, (k + 1) * GLOBAL_BATCH // n)
    size = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
    dataset = tf.data.Dataset.from_tensor_slices((x[:, rows], y[:, rows]))
    return dataset.unbatch().batch(size)


def main(out, steps):
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=60.0,
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    import keras_circle
    from keras_circle.training import train_loop

    model, history = train_loop(
        strategy,
        model_fn,
        keras_circle.CircleLoss(),
        optimizer_fn,
        dataset_fn,
        steps,
        verbose=0,
    )
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(out, loss=np.array(history["loss"]), **weights)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
