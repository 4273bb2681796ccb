"""Runs an exported SavedModel in a new Python that imports TensorFlow alone.

That is what TF Serving runs: the export must load and serve without
keras_circle (or Keras custom objects) on the path.
"""

import json
import os
import subprocess
import sys
import textwrap

_PROLOGUE = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load({version!r})
x = np.asarray(json.loads(sys.stdin.read()), dtype="float32")
"""
_EPILOGUE = """
assert "keras_circle" not in sys.modules
print(json.dumps(answer))
"""


def serve_in_fresh_process(version, body, x):
    """The dict `answer` that `body` builds in a new interpreter.

    `body` runs with `np`, `tf`, `loaded` (the SavedModel at `version`) and
    `x` (the float32 array `x`, sent over stdin) defined, and sets `answer`
    to a JSON-able dict. The run fails if keras_circle was imported.
    """
    script = _PROLOGUE.format(version=str(version)) + textwrap.dedent(body) + _EPILOGUE
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
