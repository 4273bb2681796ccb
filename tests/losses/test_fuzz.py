"""Property tests of every loss: finite in, finite out; non-finite in, never silent.

Hypothesis draws the label layout, the scale of the inputs (2**-99 to 2**99,
about 1e-30 to 1e30, powers of two so that scaling is exact in every dtype),
their dtype, the hyperparameters and the execution mode. Shapes come from two
buckets and hyperparameters from short lists, so that each compiled mode
builds a handful of programs, cached below, not one per example. Examples are
derandomised: CI sees the same ones on every run.
"""

import re

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_circle
from keras_circle.testing.backend import HAS_XLA
from tests.losses.memory_loss import MemoryThenLoss

pytestmark = pytest.mark.backend_agnostic

BACKEND = keras.backend.backend()
# PyTorch has no XLA (`keras_circle.testing.backend.HAS_XLA`): eager only.
MODES = (
    ["eager"]
    + (["jit"] if HAS_XLA else [])
    + (["graph"] if BACKEND == "tensorflow" else [])
)
PAIR_BUCKETS = [(4, 3), (9, 5)]  # (batch, dim)
CLASS_BUCKETS = [(4, 6), (9, 5)]  # (batch, num_classes)
# Powers of two that keep x ~ N(0, 1) inside each dtype's normal range.
EXPONENTS = {"float32": (-99, 99), "bfloat16": (-99, 99), "float16": (-8, 8)}


# name: (kind, scale invariant, factories of the loss, one per setting).
LOSSES = {
    "circle": (
        "pair",
        True,
        [lambda: keras_circle.CircleLoss(), lambda: keras_circle.CircleLoss(256, 0.25)],
    ),
    "circle_full_gradient": (
        "pair",
        True,
        [lambda: keras_circle.CircleLoss(64.0, 0.3, stop_alpha_gradient=False)],
    ),
    "unified": ("pair", True, [lambda: keras_circle.UnifiedPairLoss(128.0, 0.25)]),
    "triplet": ("pair", False, [lambda: keras_circle.TripletLoss(margin=0.5)]),
    "triplet_normalised": (
        "pair",
        True,
        [
            lambda: keras_circle.TripletLoss(
                mining="batch_hard", distance="squared_l2", l2_normalize=True
            ),
            lambda: keras_circle.TripletLoss(distance="angular"),
        ],
    ),
    "xbm": ("xbm", True, [lambda: (32.0, 0.25)]),
    "class_circle": (
        "class",
        True,
        [
            lambda: keras_circle.ClassCircleLoss(),
            lambda: keras_circle.ClassCircleLoss(64.0, 0.1),
        ],
    ),
    "am_softmax": ("class", True, [lambda: keras_circle.AMSoftmaxLoss()]),
    "arcface": ("class", True, [lambda: keras_circle.ArcFaceLoss()]),
}

_LOSS_CACHE = {}
_FN_CACHE = {}


def _loss(name, setting, dim):
    """One loss object per (name, setting, dim): stable closures to compile."""
    key = (name, setting, dim)
    if key not in _LOSS_CACHE:
        kind, _, factories = LOSSES[name]
        if kind == "xbm":
            gamma, margin = factories[setting]()
            _LOSS_CACHE[key] = MemoryThenLoss(dim, gamma=gamma, margin=margin)
        else:
            _LOSS_CACHE[key] = factories[setting]()
    return _LOSS_CACHE[key]


def _value_and_grad_fn(name, setting, dim, mode):
    """`(labels, x) -> (value, grad)` in `mode`, cached: jitted programs are
    reused for every example of the same shapes and dtypes."""
    key = (name, setting, dim, mode)
    if key in _FN_CACHE:
        return _FN_CACHE[key]
    loss = _loss(name, setting, dim)
    if BACKEND == "jax":
        import jax

        def scalar(x, labels):
            return loss(labels, x)

        step = jax.value_and_grad(scalar)
        if mode == "jit":
            step = jax.jit(step)

        def fn(labels, x):
            value, grad = step(x, labels)
            return np.asarray(value, "float32"), np.asarray(grad, "float32")

    elif BACKEND == "torch":
        from keras_circle.testing.backend import value_and_grad

        def fn(labels, x):
            value, (grad,) = value_and_grad(lambda x: loss(labels, x), x)
            return value.astype("float32"), grad.astype("float32")

    else:
        import tensorflow as tf

        def step(labels, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(labels, x)
            return value, tape.gradient(value, x)

        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "jit")

        def fn(labels, x):
            value, grad = step(tf.constant(labels), tf.constant(x))
            return value.numpy(), tf.cast(grad, "float32").numpy()

    _FN_CACHE[key] = fn
    return fn


def _labels(layout, batch, classes, draw):
    if layout == "pairs":
        labels = np.arange(batch) // 2
    elif layout == "one_class":
        labels = np.zeros(batch, "int64")
    elif layout == "distinct":
        labels = np.arange(batch)
    else:
        labels = np.array(
            draw(st.lists(st.integers(0, 2), min_size=batch, max_size=batch))
        )
    return (labels % classes).astype("int32")


@st.composite
def cases(draw, name, mode):
    """Inputs of loss `name` at some scale and dtype, for `mode`."""
    kind, invariant, factories = LOSSES[name]
    setting = draw(st.integers(0, len(factories) - 1))
    buckets = CLASS_BUCKETS if kind == "class" else PAIR_BUCKETS
    batch, width = draw(st.sampled_from(buckets))
    dtype = draw(st.sampled_from(sorted(EXPONENTS)))
    exponent = draw(st.integers(*EXPONENTS[dtype]))
    layout = draw(st.sampled_from(["pairs", "one_class", "distinct", "random"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if kind == "class":
        # Cosines live in [-1, 1]: no scale to draw; the dtype still counts.
        x = np.tanh(rng.normal(size=(batch, width)))
        exponent = 0
    else:
        x = rng.normal(size=(batch, width))
    labels = _labels(layout, batch, width if kind == "class" else batch, draw)
    base = keras.ops.convert_to_numpy(keras.ops.cast(x.astype("float32"), dtype))
    return {
        "name": name,
        "setting": setting,
        "invariant": invariant,
        "labels": labels,
        "base": base,  # the same values at scale 1, in the same dtype
        "x": base * np.float32(2.0**exponent),
        "dtype": dtype,
        "mode": mode,
    }


def _as_dtype(x, dtype):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, dtype))


# Examples per loss, mode and test: both tests take about 45 s per backend
# on 2 CPU cores, most of it compiling.
SETTINGS = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(LOSSES))
@SETTINGS
@given(data=st.data())
def test_finite_inputs_give_finite_values_and_gradients(name, mode, data):
    case = data.draw(cases(name, mode))
    event(case["dtype"])  # pytest --hypothesis-show-statistics
    dim = case["x"].shape[1]
    fn = _value_and_grad_fn(case["name"], case["setting"], dim, case["mode"])
    x = _as_dtype(case["x"], case["dtype"])
    value, grad = fn(case["labels"], x)
    assert np.isfinite(value), case
    if case["dtype"] == "float16":
        # Gradients of tiny inputs can exceed float16's range (65504): inf,
        # never NaN.
        assert not np.any(np.isnan(grad)), case
    else:
        assert np.all(np.isfinite(grad)), case
    if case["invariant"]:
        eager = _value_and_grad_fn(case["name"], case["setting"], dim, "eager")
        expected, _ = eager(case["labels"], _as_dtype(case["base"], case["dtype"]))
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-4)


def _bad(case, draw):
    """Puts NaN or +-inf into the input, or makes the labels invalid."""
    kind = LOSSES[case["name"]][0]
    faults = ["nan", "inf", "-inf", "fractional"] + (
        ["range"] if kind == "class" else []
    )
    fault = draw(st.sampled_from(faults))
    x, labels = case["x"].astype("float32"), case["labels"].astype("float32")
    if fault == "fractional":
        labels[draw(st.integers(0, len(labels) - 1))] += 0.5
    elif fault == "range":
        labels[draw(st.integers(0, len(labels) - 1))] = x.shape[1] + 2
    else:
        row = draw(st.integers(0, x.shape[0] - 1))
        col = draw(st.integers(0, x.shape[1] - 1))
        x[row, col] = float(fault)
    return fault, labels, _as_dtype(x, case["dtype"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(LOSSES))
@SETTINGS
@given(data=st.data())
def test_non_finite_inputs_are_never_silent(name, mode, data):
    """NaN (value and gradient) under XLA and `jax.jit`; a clear error in
    eager TensorFlow and in plain graphs; one or the other under `jax.grad`."""
    case = data.draw(cases(name, mode))
    fault, labels, x = _bad(case, data.draw)
    event(fault)
    mode = case["mode"]
    fn = _value_and_grad_fn(case["name"], case["setting"], x.shape[1], mode)
    message = "NaN|integer class labels|class ids"
    if mode == "jit":
        value, grad = fn(labels, x)
        assert np.isnan(value) and np.all(np.isnan(grad)), (fault, case)
        return
    if BACKEND == "jax":
        # Under `jax.grad` even an unjitted call sees the differentiated
        # input as a tracer, which no check can read: NaN, or an error from
        # a check of the labels (concrete there).
        try:
            value, grad = fn(labels, x)
        except ValueError as error:
            assert re.search(message, str(error)), error
            return
        assert np.isnan(value) and np.all(np.isnan(grad)), (fault, case)
        return
    import tensorflow as tf

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=message):
        fn(labels, x)
