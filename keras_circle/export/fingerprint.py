"""Which embedder an export holds: a fingerprint, and the shape-change check.

`model_fingerprint` runs on any Keras backend (a search index built under
JAX can compare its embedder with an export's metadata); reading a served
version without keras-circle metadata needs TensorFlow.
"""

import hashlib
import json
import os

import keras
import numpy as np

from keras_circle.export.embedder import get_embedder
from keras_circle.export.publish import latest_version

# Where export_saved_model writes its metadata inside a version folder.
METADATA_PATH = os.path.join("assets.extra", "keras_circle.json")
SHAPE_KEYS = ("input_shape", "embedding_size")


def model_fingerprint(model, embedding_layer=None):
    """Returns what identifies the embedder of `model`, as a JSON-able dict.

    The embedder is chosen as `get_embedder` does, so a training model, its
    bare embedder and the `.keras` file they were saved to give the same
    fingerprint, and it equals the `fingerprint` an export records in its
    metadata. The weights hash covers every weight (trainable or not) in the
    embedder's order: its shape, dtype and bytes, not its name.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.
        embedding_layer: See `get_embedder`. Defaults to `None`.

    Returns:
        A dict with `input_shape` (list, `None` for the batch and any free
        size), `input_dtype`, `embedding_size` (int), `dtype` (the Keras
        embedding's dtype, e.g. `"float16"` for a mixed-precision model; the
        exports always compute float32), `num_weights` (parameters, int) and
        `weights_sha256` (hex str).

    Example:

    >>> keras_circle.export.model_fingerprint(trainer)["embedding_size"]
    128
    """
    embedder = get_embedder(model, embedding_layer)
    digest = hashlib.sha256()
    count = 0
    for weight in embedder.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(json.dumps([list(value.shape), str(value.dtype)]).encode())
        digest.update(value.tobytes())
        count += int(value.size)
    return {
        "input_shape": list(embedder.inputs[0].shape),
        "input_dtype": str(embedder.inputs[0].dtype),
        "embedding_size": int(embedder.outputs[0].shape[-1]),
        "dtype": str(embedder.outputs[0].dtype),
        "num_weights": count,
        "weights_sha256": digest.hexdigest(),
    }


def served_shapes(version_dir):
    """`{"input_shape", "embedding_size"}` of a published SavedModel version.

    Read from the keras-circle metadata's fingerprint, else (an export of an
    older keras-circle, or another tool) from the `serving_default`
    signature in `saved_model.pb`. `None` if neither says.
    """
    try:
        with open(os.path.join(version_dir, METADATA_PATH), encoding="utf-8") as f:
            fingerprint = json.load(f).get("fingerprint") or {}
        if all(key in fingerprint for key in SHAPE_KEYS):
            return {key: fingerprint[key] for key in SHAPE_KEYS}
    except (OSError, ValueError, AttributeError):
        pass
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        signature = proto.meta_graphs[0].signature_def["serving_default"]
        (image,) = signature.inputs.values()
        (embedding,) = signature.outputs.values()
    except (OSError, ValueError, IndexError, KeyError):
        return None
    if image.tensor_shape.unknown_rank or embedding.tensor_shape.unknown_rank:
        return None
    sizes = [d.size for d in image.tensor_shape.dim]
    return {
        "input_shape": [None if s < 0 else s for s in sizes],
        "embedding_size": embedding.tensor_shape.dim[-1].size,
    }


def check_shape_change(base_dir, fingerprint):
    """Refuses an export whose shapes differ from the latest version's.

    Args:
        base_dir: The TF Serving base directory.
        fingerprint: The new export's `model_fingerprint`.

    Raises:
        ValueError: If the input shape or embedding size differs from the
            latest version in `base_dir`, or that version's shapes cannot be
            read.
    """
    latest = latest_version(base_dir)
    if latest is None:
        return
    served = served_shapes(os.path.join(base_dir, str(latest)))
    new = {key: fingerprint[key] for key in SHAPE_KEYS}
    allow = "pass `allow_shape_change=True` (CLI: --allow-shape-change)"
    if served is None:
        raise ValueError(
            f"Export refused: cannot read the input shape and embedding size of "
            f"version {latest} in {base_dir!r} to compare with this model's "
            f"{new}; {allow} to publish anyway."
        )
    if served != new:
        raise ValueError(
            f"Export refused: the latest version {latest} in {base_dir!r} takes "
            f"input {served['input_shape']} and gives embeddings of size "
            f"{served['embedding_size']}; this model takes "
            f"{new['input_shape']} and gives {new['embedding_size']}. Clients "
            f"and search indexes built for version {latest} would break; "
            f"{allow} to publish it as a new version anyway."
        )
