"""The cyclic layout of the symmetric kernel's panels (TensorFlow under XLA)."""

import collections
import re

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle import kernels
from keras_circle import panel_loops
from keras_circle import similarity
from keras_circle.testing.autodiff import pair_softplus_autodiff
from keras_circle.testing.backend import value_and_grad
from tests.test_kernels import batch
from tests.test_kernels import circle
from tests.test_kernels import rel_diff

pytestmark = pytest.mark.backend_agnostic

ONLY_TF = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the cyclic layout is for TensorFlow steps compiled with XLA",
)


def test_cyclic_panels_take_every_pair_of_blocks_once():
    """Block `b` against `b..b + count // 2` (modulo `count`), the second half
    one block short when `count` is even: each unordered pair of blocks, the
    diagonal ones included, lands in exactly one panel."""
    for count in range(2, 12):
        seen = collections.Counter()
        for first, end, blocks in panel_loops._sweeps(count):
            for b in range(first, end):
                for offset in range(blocks):
                    seen[frozenset((b, (b + offset) % count))] += 1
        pairs = {frozenset((a, b)) for a in range(count) for b in range(count)}
        assert set(seen) == pairs and set(seen.values()) == {1}, count


@pytest.mark.parametrize(
    "size,block_size,expected",
    [
        (8192, 512, (512, 16)),
        (5000, 512, (500, 10)),  # the largest divisor down to half the size
        (12, 5, (4, 3)),
        (13, 5, None),  # no divisor from 5 down to 3: unrolled panels
        (12, 12, None),  # one panel
        (None, 512, None),  # known at run time only
        (13, 1, (1, 13)),
    ],
)
def test_cyclic_blocks(size, block_size, expected):
    layout = panel_loops.cyclic_blocks(size, block_size)
    assert (layout if layout is None else tuple(layout)) == expected


def _compiled_step(fn):
    """`x -> (fn(x), its gradient)`, a TensorFlow step compiled with XLA."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)

    return step


def _compiled_value_and_grad(fn, x):
    """`fn(x)` and its gradient from one TensorFlow step compiled with XLA."""
    value, grad = _compiled_step(fn)(keras.ops.convert_to_tensor(x))
    return value.numpy(), grad.numpy()


@ONLY_TF
@pytest.mark.parametrize(
    "n,block_size",
    # count 2, an odd count, even counts (two loops), one row per block
    [(12, 6), (12, 4), (15, 3), (12, 3), (16, 4), (7, 1)],
)
def test_cyclic_panels_match_autodiff_when_compiled(rng, n, block_size):
    """Compiled, a static batch runs the `Cyclic` loops: loss and gradient
    match autodiff of the plain formulation (run eagerly, one matrix)."""
    assert panel_loops.cyclic_blocks(n, block_size) is not None
    labels, e = batch(rng, n=n)
    upstream = keras.ops.convert_to_tensor(rng.uniform(0.5, 2.0, size=n), "float32")
    fn = circle(128.0, 0.25, True)

    def fused(e):
        losses, _ = kernels.fused_pair_softplus(
            labels, similarity.l2_normalize(e), fn, block_size=block_size
        )
        return keras.ops.sum(losses * upstream)

    def plain(e):
        return keras.ops.sum(pair_softplus_autodiff(labels, e, fn)[0] * upstream)

    value, grad = _compiled_value_and_grad(fused, e)
    ref_value, (ref_grad,) = value_and_grad(plain, e)
    assert rel_diff(value, ref_value) < 1e-5
    assert rel_diff(grad, ref_grad) < 1e-5


@ONLY_TF
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cyclic_panels_turn_a_bad_entry_into_nan(rng, bad):
    """`CircleLoss` on a batch of 2048 (four 512-row blocks: both loops),
    compiled: one bad embedding gives a NaN loss and an all-NaN gradient,
    never a finite-looking result."""
    labels = rng.integers(0, 256, size=2048)
    e = rng.normal(size=(2048, 8)).astype("float32")
    assert panel_loops.cyclic_blocks(2048, kernels.DEFAULT_BLOCK_SIZE) is not None
    loss = keras_circle.CircleLoss()

    def scalar(e):
        return loss(labels, e)

    value, grad = _compiled_value_and_grad(scalar, e)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(float(scalar(e)), rel=1e-5)
    e[1500, 2] = bad
    value, grad = _compiled_value_and_grad(scalar, e)
    assert np.isnan(value) and np.all(np.isnan(grad))


@ONLY_TF
def test_cyclic_program_does_not_grow_with_the_panels(rng):
    """The loops compile one body per loop: a batch of 8 blocks and one of 16
    give programs with the same number of matmuls (unrolled panels, 3 per
    panel, would double them) and the same number of loops."""

    def program(count):
        labels, e = batch(rng, n=4 * count)

        def fused(e):
            losses, _ = kernels.fused_pair_softplus(
                labels, similarity.l2_normalize(e), circle(80.0, 0.4, True),
                block_size=4,
            )  # fmt: skip
            return keras.ops.sum(losses)

        compiler_ir = _compiled_step(fused).experimental_get_compiler_ir
        return compiler_ir(keras.ops.convert_to_tensor(e))(stage="hlo")

    def counts(text):
        dots = len(re.findall(r"\bdot\(", text))
        loops = len(re.findall(r"\bwhile\(", text))
        return dots, loops

    small, large = counts(program(8)), counts(program(16))
    assert small == large and small[0] >= 8 and small[1] >= 4, (small, large)


@ONLY_TF
def test_cyclic_panels_only_where_xla_compiles_the_step():
    """Under `jit_compile` the loops; in a plain graph (TensorFlow's matmuls,
    element-wise clusters per panel) and eagerly the unrolled panels."""
    import tensorflow as tf

    seen = []

    def probe():
        seen.append(panel_loops.cyclic_layout(64, 8))
        return tf.constant(0)

    probe()
    tf.function(probe)()
    tf.function(probe, jit_compile=True)()
    assert seen == [None, None, panel_loops.Cyclic(8, 8)]
