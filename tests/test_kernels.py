"""The fused pair-wise kernel against autodiff of the plain formulation."""

import keras
import numpy as np
import pytest

from keras_circle import kernels
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
