"""The float32 serving functions of an embedder, and their verification.

Preprocessing, used by the image-bytes signature and recorded in the
metadata, is a small JSON-able dict: `{"size": [H, W], "channels": C,
"scale": "zero_one" | "minus_one_to_one" | "none"}`. `"zero_one"` divides
pixel values by 255, `"minus_one_to_one"` maps them to `[-1, 1]`, `"none"`
keeps `[0, 255]`. By default `size` and `channels` come from the model's
input shape and `scale` is `"zero_one"`.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

import keras_circle
from keras_circle.export.embedder import as_float32
from keras_circle.export.embedder import get_embedder
from keras_circle.export.embedder import load_model
from keras_circle.export.fingerprint import model_fingerprint

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
INPUT_NAME = "image"
BYTES_INPUT_NAME = "image_bytes"
OUTPUT_NAME = "embedding"

# pixel value (uint8 range) -> pixel * factor + offset
SCALES = {
    "zero_one": (1.0 / 255.0, 0.0),
    "minus_one_to_one": (1.0 / 127.5, -1.0),
    "none": (1.0, 0.0),
}
_PREPROCESSING_KEYS = ("size", "channels", "scale")


class ExportVerificationError(RuntimeError):
    """The exported artifact does not reproduce the Keras embeddings."""


def default_preprocessing(embedder):
    """Preprocessing derived from the input shape: its size, [0, 1] scaling.

    Args:
        embedder: A `keras.Model` with an image input `(batch, H, W, C)`.

    Returns:
        A dict `{"size": [H, W], "channels": C, "scale": "zero_one"}`, or
        `None` when the input is not an image with known size and 1, 3 or 4
        channels (such a model gets no image-bytes signature).
    """
    shape = tuple(embedder.inputs[0].shape)
    if len(shape) != 4 or None in shape[1:] or shape[3] not in (1, 3, 4):
        return None
    return {"size": [shape[1], shape[2]], "channels": shape[3], "scale": "zero_one"}


class ServingGraph:
    """The float32 embedder, its preprocessing and the serving functions.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.
        embedding_layer: See `get_embedder`.
        preprocessing: The dict of the module docstring, or `None`.
    """

    def __init__(self, model, embedding_layer, preprocessing):
        is_path = isinstance(model, (str, os.PathLike))
        self.source = os.fspath(model) if is_path else getattr(model, "name", None)
        model = load_model(model)
        embedder = get_embedder(model, embedding_layer)
        input_dtype = embedder.inputs[0].dtype
        if not keras.backend.is_float_dtype(input_dtype):
            raise ValueError(
                f"The embedder's input is {input_dtype}; the exported signatures "
                "take float32 images (`image`) or encoded image bytes. Give the "
                "model a float input (cast to integers inside it if it needs to)."
            )
        self.fingerprint = model_fingerprint(embedder)
        self.embedder = as_float32(embedder)
        shape = tuple(self.embedder.inputs[0].shape)
        self.embedding_size = int(self.embedder.outputs[0].shape[-1])
        self.preprocessing = _check_preprocessing(
            preprocessing, default_preprocessing(self.embedder), shape
        )
        if None in shape[1:] and self.preprocessing is None:
            raise ValueError(
                f"The embedder input {shape} has unknown sizes; pass "
                "`preprocessing={'size': [H, W]}` to fix the serving size."
            )
        self.image_spec = tf.TensorSpec((None,) + shape[1:], "float32", INPUT_NAME)
        self.bytes_spec = tf.TensorSpec((None,), tf.string, BYTES_INPUT_NAME)

    @tf.function
    def serve(self, image):
        # Fails with the expected shape named instead of running a
        # size-agnostic (pooling) embedder on the wrong input.
        image = tf.ensure_shape(image, self.image_spec.shape)
        embedding = tf.cast(self.embedder(image, training=False), tf.float32)
        return {OUTPUT_NAME: tf.math.l2_normalize(embedding, axis=-1)}

    @tf.function
    def serve_bytes(self, image_bytes):
        height, width = self.preprocessing["size"]
        channels = self.preprocessing["channels"]
        factor, offset = SCALES[self.preprocessing["scale"]]

        def decode(encoded):
            pixels = tf.io.decode_image(
                encoded, channels=channels, dtype=tf.uint8, expand_animations=False
            )
            pixels = tf.image.resize(tf.cast(pixels, tf.float32), (height, width))
            return pixels * factor + offset

        images = tf.map_fn(
            decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
        )
        return self.serve(images)

    def sample(self, batch_size, seed=0):
        """Random float inputs in the range the preprocessing produces."""
        shape = self.image_spec.shape[1:]
        if None in shape:
            shape = [*self.preprocessing["size"], self.preprocessing["channels"]]
        pixels = np.random.default_rng(seed).uniform(0, 255, (batch_size, *shape))
        factor, offset = SCALES[(self.preprocessing or {}).get("scale", "zero_one")]
        return (pixels * factor + offset).astype("float32")

    def reference(self, x):
        embedding = np.asarray(self.embedder(x, training=False), dtype="float64")
        norm = np.linalg.norm(embedding, axis=-1, keepdims=True)
        return embedding / np.maximum(norm, 1e-12)

    def verify(self, run, what, atol, verify_batch_size):
        """Max abs difference per batch size; raises above `atol`."""
        diffs = {}
        for batch_size in sorted({1, int(verify_batch_size)}):
            x = self.sample(batch_size, seed=batch_size)
            got, want = run(x), self.reference(x)
            if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
                raise ExportVerificationError(
                    f"{what} export refused: non-finite embeddings at batch "
                    f"{batch_size} (Keras finite: {bool(np.isfinite(want).all())})."
                )
            diffs[f"batch_{batch_size}"] = float(np.max(np.abs(got - want)))
            if diffs[f"batch_{batch_size}"] > atol:
                raise ExportVerificationError(
                    f"{what} export refused: embeddings differ from Keras by "
                    f"{diffs[f'batch_{batch_size}']:.3g} (max abs) at batch "
                    f"{batch_size}, above atol={atol:g}."
                )
        return diffs

    def verify_bytes(self, signature, atol):
        """Checks PNG bytes through `serving_bytes` against the float path."""
        height, width = self.preprocessing["size"]
        channels = self.preprocessing["channels"]
        pixels = np.random.default_rng(7).integers(
            0, 256, (2, height, width, channels), dtype=np.uint8
        )
        encoded = tf.stack([tf.io.encode_png(p) for p in pixels])
        got = signature(**{BYTES_INPUT_NAME: encoded})[OUTPUT_NAME].numpy()
        factor, offset = SCALES[self.preprocessing["scale"]]
        want = self.reference((pixels * factor + offset).astype("float32"))
        diff = float(np.max(np.abs(got - want)))
        if not diff <= atol:
            raise ExportVerificationError(
                f"SavedModel export refused: the image-bytes signature differs "
                f"from the float path by {diff:.3g} on PNG images (atol={atol:g})."
            )
        return diff

    def metadata(self, diffs):
        return {
            "embedding_size": self.embedding_size,
            "preprocessing": self.preprocessing,
            "source": self.source,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "max_abs_diff_vs_keras": diffs,
            "keras_circle_version": keras_circle.__version__,
            "fingerprint": self.fingerprint,
        }

    def write_metadata(self, path, diffs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.metadata(diffs), f, indent=2)


def _check_preprocessing(preprocessing, default, input_shape):
    if preprocessing is None:
        return default
    if len(input_shape) != 4:
        raise ValueError(
            f"`preprocessing` needs an image input (batch, H, W, C); the model "
            f"input has shape {input_shape}."
        )
    unknown = sorted(set(preprocessing) - set(_PREPROCESSING_KEYS))
    if unknown:
        raise ValueError(f"Unknown preprocessing key(s) {unknown}.")
    merged = dict(default or {"scale": "zero_one"}, **preprocessing)
    merged.setdefault("channels", input_shape[3])
    if merged.get("scale") not in SCALES:
        raise ValueError(
            f"preprocessing `scale` must be one of {sorted(SCALES)}; "
            f"got {merged.get('scale')!r}."
        )
    size = merged.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise ValueError(f"preprocessing `size` must be [H, W] ints; got {size!r}.")
    for got, want in zip([*size, merged["channels"]], input_shape[1:], strict=True):
        if want is not None and got != want:
            raise ValueError(
                f"preprocessing {merged} does not match the model input shape "
                f"{input_shape}."
            )
    merged["size"] = list(size)
    return merged
