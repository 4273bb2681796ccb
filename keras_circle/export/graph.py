"""The float32 serving functions of an embedder, and their verification.

Preprocessing, used by the image-bytes signature and recorded whole in the
metadata, is a spec of `keras_circle.data.conventions` (size, channels,
resize policy, normalization with its mean/std): `serving_bytes` runs
`keras_circle.data.test_time_image`, the data module's test-time path, so a
served embedding equals the one evaluation computed. By default `size` and
`channels` come from the model's input shape, the whole image is resized,
and the normalization is `"none"` when the model rescales its raw pixels
itself (`find_input_scaling`), else `"zero_one"`.
"""

import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_circle
from keras_circle.data import conventions
from keras_circle.data.preprocessing import test_time_image
from keras_circle.export.embedder import as_float32
from keras_circle.export.embedder import get_embedder
from keras_circle.export.embedder import load_model
from keras_circle.export.fingerprint import model_fingerprint
from keras_circle.export.gallery import check_top_k
from keras_circle.export.gallery import gallery_arrays
from keras_circle.export.input_scaling import find_input_scaling

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
SEARCH_SIGNATURE = "serving_search"
INPUT_NAME = "image"
BYTES_INPUT_NAME = "image_bytes"
OUTPUT_NAME = "embedding"
IDS_NAME = "ids"
SCORES_NAME = "scores"


class ExportVerificationError(RuntimeError):
    """The exported artifact does not reproduce the Keras embeddings."""


def default_preprocessing(embedder):
    """Preprocessing derived from the model: its input size, resize, scaling.

    Args:
        embedder: A `keras.Model` with an image input `(batch, H, W, C)`.

    Returns:
        A spec (`keras_circle.data.make_spec`) resizing to the input size,
        with normalization `"none"` if the model rescales raw pixels itself
        (`find_input_scaling`), else `"zero_one"`; `None` when the input is
        not an image with known size and 1, 3 or 4 channels (such a model
        gets no image-bytes signature).
    """
    shape = tuple(embedder.inputs[0].shape)
    if len(shape) != 4 or None in shape[1:] or shape[3] not in (1, 3, 4):
        return None
    normalization = "none" if find_input_scaling(embedder) else "zero_one"
    return conventions.make_spec(
        [shape[1], shape[2]], channels=shape[3], normalization=normalization
    )


def real_images():
    """Encoded real images for the bytes verification: PNG and JPEG, grey and
    colour, square and not (so the crop policy is exercised).

    Built from the packaged Fashion-MNIST subset: three test images make the
    colour channels, two such tiles side by side a 28x56 image.
    """
    from keras_circle.data import load_fashion_mnist_subset

    x = load_fashion_mnist_subset()[1][0][:9]
    colour = np.stack([x[0], x[1], x[2]], -1)
    other = np.stack([x[3], x[4], x[5]], -1)
    wide = np.repeat(np.repeat(np.concatenate([colour, other], 1), 2, 0), 2, 1)
    tall = np.concatenate([colour, other, np.stack([x[6], x[7], x[8]], -1)], 0)
    images = [
        tf.io.encode_png(x[0][..., None]),
        tf.io.encode_png(wide),
        tf.io.encode_jpeg(tall, quality=95),
    ]
    return tf.stack(images)


class ServingGraph:
    """The float32 embedder, its preprocessing and the serving functions.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.
        embedding_layer: See `get_embedder`.
        preprocessing: A spec (possibly partial) of the module docstring,
            or `None`.
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
        self.input_scaling = find_input_scaling(self.embedder)
        self.preprocessing = _check_preprocessing(
            preprocessing, default_preprocessing(self.embedder), shape
        )
        normalization = (self.preprocessing or {}).get("normalization")
        if self.input_scaling and normalization not in (None, "none"):
            warnings.warn(
                f"The model rescales its own input ({self.input_scaling}), and "
                f"the export scales pixels first as normalization "
                f"{normalization!r} says. That is right only if training fed it "
                "so; for raw [0, 255] pixels pass "
                "`preprocessing={'normalization': 'none'}`.",
                UserWarning,
                stacklevel=3,
            )
        self.gallery = None
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
        spec = self.preprocessing
        height, width = spec["size"]
        images = tf.map_fn(
            lambda encoded: test_time_image(encoded, spec),
            image_bytes,
            fn_output_signature=tf.TensorSpec(
                (height, width, spec["channels"]), tf.float32
            ),
        )
        return self.serve(images)

    def set_gallery(self, gallery, top_k):
        """Stores the gallery the search functions rank (see `gallery_arrays`)."""
        embeddings, ids = gallery_arrays(gallery, self.embedding_size, self.fingerprint)
        self.top_k = check_top_k(top_k, embeddings.shape[0])
        # Variables, not constants: they go to the variables shard files, so
        # the gallery is not bound by the 2 GB protobuf limit of saved_model.pb.
        self.gallery = tf.Variable(embeddings, trainable=False, name="gallery")
        self.gallery_ids = tf.Variable(ids, trainable=False, name="gallery_ids")
        self.gallery_numpy = (embeddings, ids)

    def search(self, embedding):
        """Exact cosine top-k of unit `embedding` rows against the gallery."""
        scores = tf.linalg.matmul(embedding, self.gallery, transpose_b=True)
        top = tf.math.top_k(scores, k=self.top_k)
        return {
            IDS_NAME: tf.gather(self.gallery_ids, top.indices),
            SCORES_NAME: top.values,
        }

    @tf.function
    def serve_search(self, image):
        return self.search(self.serve(image)[OUTPUT_NAME])

    @tf.function
    def serve_with_search(self, image):
        embedding = self.serve(image)[OUTPUT_NAME]
        return {OUTPUT_NAME: embedding, **self.search(embedding)}

    def sample(self, batch_size, seed=0):
        """Random float inputs in the range the preprocessing produces."""
        shape = self.image_spec.shape[1:]
        if None in shape:
            shape = [*self.preprocessing["size"], self.preprocessing["channels"]]
        pixels = np.random.default_rng(seed).uniform(0, 255, (batch_size, *shape))
        spec = self.preprocessing or conventions.make_spec(
            [1, 1], channels=1, normalization="zero_one"
        )
        return conventions.normalize_pixels(pixels, spec)

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
        """Real encoded images through `serving_bytes` vs the data pipeline.

        The reference is what evaluation computes: Keras on
        `keras_circle.data.test_time_image` of the same bytes.
        """
        encoded = real_images()
        got = signature(**{BYTES_INPUT_NAME: encoded})[OUTPUT_NAME].numpy()
        x = np.stack([test_time_image(e, self.preprocessing) for e in encoded])
        want = self.reference(x)
        diff = float(np.max(np.abs(got - want)))
        if not diff <= atol:
            raise ExportVerificationError(
                f"SavedModel export refused: the image-bytes signature differs "
                f"from Keras on the data module's test-time preprocessing by "
                f"{diff:.3g} on PNG/JPEG images (atol={atol:g})."
            )
        return diff

    def verify_search(self, run, what, atol):
        """Checks `run(images) -> (ids, scores)` against exact NumPy search.

        Scores must be the top-k cosine similarities of the Keras
        embeddings; each returned id must have the score it came with (so
        ties may come in either order).
        """
        embeddings, ids = self.gallery_numpy
        x = self.sample(4, seed=11)
        got_ids, got_scores = run(x)
        exact = self.reference(x) @ embeddings.astype("float64").T
        want = -np.sort(-exact, axis=1)[:, : self.top_k]
        position = {int(i): n for n, i in enumerate(ids)}
        try:
            rows = np.array([[position[int(i)] for i in row] for row in got_ids])
        except KeyError as error:
            raise ExportVerificationError(
                f"{what} export refused: the search returned id {error} that is "
                "not in the gallery."
            ) from None
        own = np.take_along_axis(exact, rows, axis=1)
        diff = float(
            max(np.max(np.abs(got_scores - want)), np.max(np.abs(got_scores - own)))
        )
        if got_ids.shape != want.shape or not diff <= atol:
            raise ExportVerificationError(
                f"{what} export refused: the search differs from exact top-"
                f"{self.top_k} search by {diff:.3g} in scores (atol={atol:g})."
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
            "input_scaling": self.input_scaling,
            "search": None
            if self.gallery is None
            else {
                "gallery_size": int(self.gallery_numpy[1].size),
                "top_k": self.top_k,
                "outputs": [IDS_NAME, SCORES_NAME],
                "exact": True,
            },
        }

    def write_metadata(self, path, diffs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.metadata(diffs), f, indent=2)


def _check_preprocessing(preprocessing, default, input_shape):
    if preprocessing is None:
        return default
    return conventions.check_spec(
        preprocessing, default=default, input_shape=input_shape
    )
