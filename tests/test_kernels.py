"""The fused pair-wise kernel against autodiff of the plain formulation."""

import collections
import re

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle import kernels
from keras_circle import panels
from keras_circle import similarity
from keras_circle.losses.baselines import UnifiedPairLogits
from keras_circle.losses.pairwise import CirclePairLogits
from keras_circle.losses.pairwise import pair_softplus_loss
from keras_circle.testing.autodiff import pair_softplus_autodiff
from keras_circle.testing.backend import jit
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA

pytestmark = pytest.mark.backend_agnostic


def circle(gamma, margin, stop):
    return CirclePairLogits(gamma, margin, stop)


def batch(rng, n=13, dim=6, classes=4):
    labels = rng.integers(0, classes, size=n)
    labels[-1] = 999  # an anchor without positives
    return labels, rng.normal(size=(n, dim)).astype("float32")


def rel_diff(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(
        np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12)
    )


def check(rng, logits, n_refs=None, self_index=None, block_size=None):
    labels, e = batch(rng)
    upstream = rng.uniform(0.5, 2.0, size=len(labels)).astype("float32")
    if n_refs is None:
        refs = ()
    else:
        ref_labels = np.concatenate([labels, rng.integers(0, 4, size=n_refs)])
        refs = (rng.normal(size=(len(ref_labels), e.shape[1])).astype("float32"),)
        refs[0][: len(labels)] = e

    def run(fn, fused):
        loss = pair_softplus_loss if fused else pair_softplus_autodiff

        def scalar(e, *r):
            if fused and block_size is not None:
                norm = similarity.l2_normalize
                losses, _ = kernels.fused_pair_softplus(
                    labels,
                    norm(e),
                    fn,
                    ref_labels if r else None,
                    norm(r[0]) if r else None,
                    self_index,
                    block_size=block_size,
                )
            elif r:
                losses, _ = loss(
                    labels,
                    e,
                    fn,
                    ref_labels=ref_labels,
                    ref_embeddings=r[0],
                    self_index=self_index,
                )
            else:
                losses, _ = loss(labels, e, fn)
            return keras.ops.sum(losses * keras.ops.convert_to_tensor(upstream))

        return value_and_grad(scalar, e, *refs)

    value, grads = run(logits, True)
    ref_value, ref_grads = run(logits, False)
    assert rel_diff(value, ref_value) < 1e-5
    for g, ref_g in zip(grads, ref_grads, strict=True):
        assert rel_diff(g, ref_g) < 1e-5


@pytest.mark.parametrize("stop", [True, False])
@pytest.mark.parametrize("gamma,margin", [(80.0, 0.4), (256.0, 0.25)])
def test_symmetric_matches_autodiff(rng, gamma, margin, stop):
    check(rng, circle(gamma, margin, stop))


@pytest.mark.parametrize("stop", [True, False])
def test_references_match_autodiff(rng, stop):
    """References from a memory bank: the first 13 are the anchors themselves."""
    check(rng, circle(80.0, 0.4, stop), n_refs=7, self_index=np.arange(13))
    check(rng, circle(80.0, 0.4, stop), n_refs=7)


@pytest.mark.parametrize("refs", [None, 7])
def test_blocks_that_do_not_divide_the_batch(rng, refs):
    index = None if refs is None else np.arange(13)
    check(rng, circle(256.0, 0.25, True), n_refs=refs, self_index=index, block_size=5)


# Eager JAX compiles every op of every panel shape: fewer sizes there.
PANEL_SIZES = [5, 13] if keras.backend.backend() == "jax" else [1, 2, 4, 6, 12, 13, 64]


@pytest.mark.parametrize("block_size", PANEL_SIZES)
@pytest.mark.parametrize("stop", [True, False])
def test_symmetric_panels_of_every_size(rng, block_size, stop):
    """Upper-triangle panels: one row each up to one panel for the whole batch."""
    check(rng, circle(128.0, 0.25, stop), block_size=block_size)


def test_symmetric_panels_one_class_and_all_singletons():
    """No negatives anywhere, then no positives anywhere: zero loss and gradient,
    whichever panel the anchors fall in."""
    e = np.random.default_rng(3).normal(size=(9, 4)).astype("float32")
    for labels in (np.zeros(9, "int32"), np.arange(9)):

        def scalar(e, labels=labels):
            losses, _ = kernels.fused_pair_softplus(
                labels, similarity.l2_normalize(e), circle(80.0, 0.4, True),
                block_size=4,
            )  # fmt: skip
            return keras.ops.sum(losses)

        value, (grad,) = value_and_grad(scalar, e)
        assert value == 0 and np.all(keras.ops.convert_to_numpy(grad) == 0)


def test_unified_loss_is_fused(rng):
    assert isinstance(UnifiedPairLogits(80.0, 0.4), kernels.PairLogits)
    check(rng, UnifiedPairLogits(80.0, 0.4))


def test_logits_without_slopes_are_rejected():
    """The kernel needs values and slopes: a bare function is a clear error."""
    with pytest.raises(TypeError, match="`logits` must be a .*PairLogits"):
        pair_softplus_loss(np.arange(3), np.ones((3, 2), "float32"), lambda s: (s, s))


def test_no_valid_anchor_gives_zero_gradient():
    labels = np.arange(6)
    e = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")

    def scalar(e):
        losses, valid = pair_softplus_loss(labels, e, circle(80.0, 0.4, True))
        return keras.ops.sum(losses)

    value, (grad,) = value_and_grad(scalar, e)
    assert value == 0 and np.all(grad == 0)


@NEEDS_XLA
def test_xla(rng):
    labels, e = batch(rng)
    fn = circle(128.0, 0.25, True)

    def losses(e):
        return pair_softplus_loss(labels, e, fn)[0]

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(jit(losses)(e)),
        keras.ops.convert_to_numpy(losses(e)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="static shapes elsewhere"
)
@pytest.mark.parametrize("n", [1, 3, 13, 40])
def test_symmetric_panels_of_a_batch_size_known_at_run_time(rng, n):
    """`fit` traces with a batch dimension of `None`: the panels' bounds are
    then computed in the graph (`DYNAMIC_PANELS` of them, some empty when the
    batch is smaller), and loss and gradient still match autodiff."""
    import tensorflow as tf

    labels = rng.integers(0, 4, size=n)
    e = rng.normal(size=(n, 6)).astype("float32")
    upstream = rng.uniform(0.5, 2.0, size=n).astype("float32")
    fn = circle(128.0, 0.25, True)

    def value_and_gradient(loss):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None, 6], tf.float32),
                tf.TensorSpec([None], tf.float32),
            ]
        )
        def run(labels, e, upstream):
            with tf.GradientTape() as tape:
                tape.watch(e)
                losses, _ = loss(labels, e, fn)
                value = tf.reduce_sum(losses * upstream)
            return value, tape.gradient(value, e)

        return run(labels, e, upstream)

    value, grad = value_and_gradient(pair_softplus_loss)
    ref_value, ref_grad = value_and_gradient(pair_softplus_autodiff)
    assert rel_diff(value, ref_value) < 1e-5
    if float(ref_value) > 0:
        assert rel_diff(grad, ref_grad) < 1e-5
    else:
        assert np.all(grad.numpy() == 0)


def test_panel_rows_follow_the_device(monkeypatch):
    """512-row panels on a CPU, 2048-row panels where a GPU runs the kernel
    (small panels leave a GPU idle); an explicit block size wins."""
    labels = keras.ops.convert_to_tensor(np.arange(6) // 2)
    e = keras.ops.convert_to_tensor(np.ones((6, 4), "float32"))
    seen = []
    forward = kernels.panels.forward

    def spy(e, labels, logits, block_size):
        seen.append(block_size)
        return forward(e, labels, logits, block_size)

    monkeypatch.setattr(kernels.panels, "forward", spy)
    logits = circle(80.0, 0.4, True)
    assert not kernels.on_accelerator(e)  # this suite runs on CPUs
    kernels.fused_pair_softplus(labels, e, logits)
    monkeypatch.setattr(kernels, "on_accelerator", lambda x: True)
    kernels.fused_pair_softplus(labels, e, logits)
    kernels.fused_pair_softplus(labels, e, logits, block_size=3)
    assert seen == [kernels.DEFAULT_BLOCK_SIZE, kernels.ACCELERATOR_BLOCK_SIZE, 3]


def test_cyclic_panels_take_every_pair_of_blocks_once():
    """Block `b` against `b..b + count // 2` (modulo `count`), the second half
    one block short when `count` is even: each unordered pair of blocks, the
    diagonal ones included, lands in exactly one panel."""
    for count in range(2, 12):
        seen = collections.Counter()
        for first, end, blocks in panels._sweeps(count):
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
    layout = panels.cyclic_blocks(size, block_size)
    assert (layout if layout is None else tuple(layout)) == expected


def _compiled_value_and_grad(fn, x):
    """`fn(x)` and its gradient from one TensorFlow step compiled with XLA."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)

    value, grad = step(tf.constant(x))
    return value.numpy(), grad.numpy()


ONLY_TF = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the cyclic layout is for TensorFlow steps compiled with XLA",
)


@ONLY_TF
@pytest.mark.parametrize(
    "n,block_size",
    # count 2, an odd count, even counts (two loops), one row per block
    [(12, 6), (12, 4), (15, 3), (12, 3), (16, 4), (7, 1)],
)
def test_cyclic_panels_match_autodiff_when_compiled(rng, n, block_size):
    """Compiled, a static batch runs the `Cyclic` loops: loss and gradient
    match autodiff of the plain formulation (run eagerly, one matrix)."""
    assert panels.cyclic_blocks(n, block_size) is not None
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
    assert panels.cyclic_blocks(2048, kernels.DEFAULT_BLOCK_SIZE) is not None
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

        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fused(x)
            return value, tape.gradient(value, x)

        return step.experimental_get_compiler_ir(tf.constant(e))(stage="hlo")

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
        seen.append(panels._cyclic(64, 8))
        return tf.constant(0)

    probe()
    tf.function(probe)()
    tf.function(probe, jit_compile=True)()
    assert seen == [None, None, panels.Cyclic(8, 8)]
