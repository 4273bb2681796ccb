"""TensorFlow only (a no-op elsewhere): element-wise stages as XLA clusters.

A plain TensorFlow graph runs each element-wise op as a pass of its own over
its operands, with a temporary for each result: over the `(batch_size,
num_classes)` cosines of a class-level loss (200 MB at 512 x 100,000) that is
a dozen passes where XLA fuses them into one or two. Compiling the whole step
with XLA fuses them too, but XLA's CPU matmuls ran about 10% slower than
TensorFlow's own (oneDNN) in `benchmarks/bench_losses.py`, and the class-level
step is mostly matmuls. `fuse(fn)` compiles just an element-wise stage, so a
plain graph gets both: TensorFlow's matmuls and XLA's fused passes. Run
eagerly, or on another backend (JAX compiles the whole step; PyTorch runs
eagerly), `fn` runs as is; inside a step compiled with XLA already it is
traced into that step (`in_xla`). `sums` sums rows and columns the way XLA's CPU
backend does fastest.
"""

import keras


def fuse(fn):
    """`fn` as one XLA cluster when traced into a TensorFlow graph, else `fn`.

    `fn` takes tensors and returns a tensor or a tuple of tensors; it must not
    hold checks that raise (XLA drops assertions): run those outside on its
    results.
    """
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def call(*args):
        if tf.executing_eagerly() or in_xla():
            return fn(*args)
        return compiled(*args)

    return call


def sums(x, axis, keepdims=False):
    """`sum(x, axis, keepdims)` of a matrix `x`, `axis` 0 or 1 (or -1).

    TensorFlow on a CPU: as a product with a vector of ones. XLA's CPU
    backend (TF 2.21) writes the fused input of a reduction out in full
    before reducing it, but feeds a dot from the fused producer (in one
    interleaved timing, the squares of a 100,000 x 512 matrix: 7.8 ms against
    19.4 ms for `sum(square(x))`; the class-level step: `bench_losses.py
    --before`). Elsewhere,
    and where a GPU runs the matmuls (TensorFloat-32 would round the sum),
    `ops.sum`.
    """
    from keras import ops

    from keras_circle import kernels

    if keras.backend.backend() != "tensorflow" or kernels.on_accelerator(x):
        return ops.sum(x, axis=axis, keepdims=keepdims)
    axis = axis % 2
    if axis:
        total = ops.matmul(x, ops.ones((ops.shape(x)[1], 1), x.dtype))
    else:
        total = ops.matmul(ops.ones((1, ops.shape(x)[0]), x.dtype), x)
    return total if keepdims else ops.squeeze(total, axis)


def in_xla():
    """Whether a TensorFlow graph being traced will be compiled with XLA as a
    whole (a `tf.function(jit_compile=True)`, or a function inside one);
    `False` eagerly and on other backends.

    A cluster called there is not just inlined: at B=8192 the pair-wise step
    kept 0.24 GiB more (peak RSS 1.53 against 1.28 GiB) with its two loops
    as nested compiled functions than with them traced into the step.
    TensorFlow's own `tf.function` asks the same private helper; should it
    move, the clusters are called as before.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow that moved it
        return False
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)
