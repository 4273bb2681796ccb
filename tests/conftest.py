"""Test set-up shared by the whole suite.

TensorFlow's CPU is split into two logical devices before anything creates a
tensor, so that `tf.distribute.MirroredStrategy()` runs two real replicas on a
CPU-only machine (README, "Running the tests"). TensorFlow refuses the split
once a tensor exists, so it happens here, before any test module imports.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_circle.testing.backend import HAS_XLA  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

BACKEND = keras.backend.backend()

# Tests that compare XLA-compiled with eager results (`testing.backend.jit`).
NEEDS_XLA = pytest.mark.skipif(
    not HAS_XLA,
    reason="no XLA on the PyTorch backend (torch.compile is another compiler)",
)


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Every test starts from the float32 policy and fixed seeds."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True, scope="session")
def _builtin_cache(tmp_path_factory):
    """The built-in small data sets go to a session folder, not ~/.cache.

    An environment variable, so CLI subprocesses use the same folder.
    """
    saved = os.environ.get("KERAS_CIRCLE_CACHE_DIR")
    os.environ["KERAS_CIRCLE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("KERAS_CIRCLE_CACHE_DIR", None)
    else:
        os.environ["KERAS_CIRCLE_CACHE_DIR"] = saved


@pytest.fixture
def rng():
    return np.random.default_rng(0)
