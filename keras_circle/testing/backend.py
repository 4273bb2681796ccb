"""Backend-neutral value-and-gradient and XLA compilation (TensorFlow or JAX)."""

import keras
import numpy as np


def value_and_grad(fn, *args):
    """`fn(*args)` (a scalar) and its gradients with respect to every argument."""
    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        arrays = [jnp.asarray(a) for a in args]
        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*arrays)
        return np.asarray(value), [np.asarray(g) for g in grads]
    import tensorflow as tf

    tensors = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = fn(*tensors)
    grads = tape.gradient(value, tensors)
    return value.numpy(), [g.numpy() for g in grads]


def jit(fn):
    """`fn` compiled with XLA on the current backend."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)
