"""Backend-neutral value-and-gradient and XLA compilation (TensorFlow, JAX, PyTorch)."""

import keras
import numpy as np

# PyTorch has no XLA: `torch.compile` is a different compiler (Inductor) that
# needs a C++ toolchain and minutes per program on CPU, so the tests that
# check compiled against eager results run on TensorFlow and JAX only.
HAS_XLA = keras.backend.backend() in ("tensorflow", "jax")


def _torch_numpy(x):
    """A NumPy copy of a torch tensor; bfloat16 (unknown to NumPy) as float32."""
    import torch

    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def value_and_grad(fn, *args):
    """`fn(*args)` (a scalar) and its gradients with respect to every argument."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        arrays = [jnp.asarray(a) for a in args]
        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*arrays)
        return np.asarray(value), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [
            keras.ops.convert_to_tensor(np.asarray(a)).detach().requires_grad_(True)
            for a in args
        ]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
        return _torch_numpy(value), [_torch_numpy(g) for g in grads]
    import tensorflow as tf

    tensors = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = fn(*tensors)
    grads = tape.gradient(value, tensors)
    return value.numpy(), [g.numpy() for g in grads]


def jit(fn):
    """`fn` compiled with XLA on the current backend (TensorFlow or JAX)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend != "tensorflow":
        raise NotImplementedError(
            f"No XLA on the {backend!r} backend; check `HAS_XLA` first."
        )
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)
