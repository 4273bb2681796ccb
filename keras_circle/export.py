"""TensorFlow-only: export an embedder as a TF Serving SavedModel and as ONNX.

Both exporters take a trained model (a training model ending in a
`CosineProxies` head, a bare embedder, or the path of a `.keras` file), keep
the embedder, append L2 normalisation, compute in float32, verify the written
artifact against Keras, and only then publish it (a version directory is
renamed into place, an ONNX file is `os.replace`d), so a failed export never
touches what is already served.

The embedder rule: with `embedding_layer="name"`, the output of that layer
(or the named nested model itself); otherwise, when the model's last layer is
a `CosineProxies`, the tensor that layer receives; otherwise the model's
output. The chosen output must be one float tensor `(batch_size, dim)`.

Preprocessing, used by the image-bytes signature and recorded in the
metadata, is a small JSON-able dict: `{"size": [H, W], "channels": C,
"scale": "zero_one" | "minus_one_to_one" | "none"}`. `"zero_one"` divides
pixel values by 255, `"minus_one_to_one"` maps them to `[-1, 1]`, `"none"`
keeps `[0, 255]`. By default `size` and `channels` come from the model's
input shape and `scale` is `"zero_one"`.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import keras_circle
from keras_circle.layers import CosineProxies

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
INPUT_NAME = "image"
BYTES_INPUT_NAME = "image_bytes"
OUTPUT_NAME = "embedding"
METADATA_PATH = os.path.join("assets.extra", "keras_circle.json")

# pixel value (uint8 range) -> pixel * factor + offset
SCALES = {
    "zero_one": (1.0 / 255.0, 0.0),
    "minus_one_to_one": (1.0 / 127.5, -1.0),
    "none": (1.0, 0.0),
}
_PREPROCESSING_KEYS = ("size", "channels", "scale")


class ExportVerificationError(RuntimeError):
    """The exported artifact does not reproduce the Keras embeddings."""


def get_embedder(model, embedding_layer=None):
    """Returns the embedder inside `model`, following the module's rule.

    Args:
        model: A `keras.Model` or the path of a `.keras` file.
        embedding_layer: Name of the layer whose output is the embedding, or
            of a nested model that is the embedder. Defaults to `None`: the
            input of a final `CosineProxies`, else the model's output.

    Returns:
        A `keras.Model` mapping the model's input to `(batch_size, dim)`.

    Raises:
        ValueError: If no single rank-2 float embedding output exists.
    """
    model = _load(model)
    if embedding_layer is not None:
        layer = model.get_layer(embedding_layer)
        if isinstance(layer, keras.Model):
            return _check_embedder(layer, f"layer {embedding_layer!r}")
        output = layer.output
    else:
        outputs = _model_inputs_outputs(model)[1]
        if len(outputs) != 1:
            raise ValueError(
                f"Model {model.name!r} has {len(outputs)} outputs; pass "
                "`embedding_layer=` to name the one that is the embedding."
            )
        last = model.layers[-1]
        output = last.input if isinstance(last, CosineProxies) else outputs[0]
    if isinstance(output, (list, tuple)):
        raise ValueError(
            f"The embedding candidate of model {model.name!r} is {len(output)} "
            "tensors, not one; pass `embedding_layer=`."
        )
    inputs = _model_inputs_outputs(model)[0]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    embedder = keras.Model(inputs, output, name=f"{model.name}_embedder")
    return _check_embedder(embedder, f"model {model.name!r}")


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


def next_version(base_dir):
    """Returns 1 + the largest integer version directory in `base_dir` (or 1)."""
    versions = [
        int(name)
        for name in (os.listdir(base_dir) if os.path.isdir(base_dir) else [])
        if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    ]
    return max(versions, default=0) + 1


def export_saved_model(
    model,
    base_dir,
    version=None,
    *,
    embedding_layer=None,
    preprocessing=None,
    atol=1e-5,
    verify_batch_size=16,
    progress=True,
):
    """Writes the embedder as TF Serving version `base_dir/<version>/`.

    The SavedModel (tag `serve`) has two signatures, both returning
    `embedding` (float32 `(batch, dim)`, unit L2 norm):
    `serving_default` takes `image`, float32 `(batch, H, W, C)` already
    preprocessed; `serving_bytes` takes `image_bytes`, a string `(batch,)` of
    encoded JPEG/PNG/GIF/BMP images that it decodes, resizes (bilinear) and
    scales as `preprocessing` says. A wrong image shape fails at run time
    with an error naming the expected shape. The version is written to a
    hidden sibling directory, loaded back and compared with Keras at batch 1
    and `verify_batch_size` (and the bytes path with the float path), then
    renamed into place; a failure deletes it and leaves `base_dir` as it was.
    `assets.extra/keras_circle.json` records the preprocessing, the
    embedding size, the source and the measured differences.

    Args:
        model: A trained `keras.Model` or the path of a `.keras` file.
        base_dir: The model's base directory (created if missing).
        version: Integer version. Defaults to `None`: the next integer.
        embedding_layer: See `get_embedder`. Defaults to `None`.
        preprocessing: Dict described in the module docstring. Defaults to
            `None`: derived from the input shape, `"zero_one"` scaling.
        atol: Largest accepted absolute difference from Keras. Defaults to
            `1e-5`.
        verify_batch_size: The larger verification batch. Defaults to `16`.
        progress: Whether to show a progress bar. Defaults to `True`.

    Returns:
        The path (str) of the published version directory.

    Raises:
        NotADirectoryError: If `base_dir` exists and is not a directory.
        FileExistsError: If the version already exists.
        ValueError: If the model has no usable embedding output or the
            preprocessing is invalid.
        ExportVerificationError: If the export differs from Keras by more than
            `atol` or gives non-finite embeddings.

    Example:

    >>> path = keras_circle.export.export_saved_model(trainer, "models/emb")
    """
    base_dir = os.fspath(base_dir)
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(
            f"`base_dir` must be a directory (TF Serving's model base path); "
            f"{base_dir!r} exists and is not a directory."
        )
    if version is None:
        version = next_version(base_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"`version` must be a non-negative int; got {version!r}.")
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"Version {version} already exists: {final!r}.")

    bar = _Steps("export_saved_model", progress)
    bar.step("trace")
    graph = _ServingGraph(model, embedding_layer, preprocessing)
    archive = keras.export.ExportArchive()
    archive.track(graph.embedder)
    archive.add_endpoint(SERVING_SIGNATURE, graph.serve, [graph.image_spec])
    if graph.preprocessing is not None:
        archive.add_endpoint(BYTES_SIGNATURE, graph.serve_bytes, [graph.bytes_spec])

    os.makedirs(base_dir, exist_ok=True)
    # Not all digits, so TF Serving never picks up a half-written version.
    staging = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base_dir)
    try:
        bar.step("write")
        archive.write_out(staging, verbose=False)
        bar.step("verify")
        loaded = tf.saved_model.load(staging)
        serve = loaded.signatures[SERVING_SIGNATURE]
        diffs = graph.verify(
            lambda x: serve(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy(),
            "SavedModel",
            atol,
            verify_batch_size,
        )
        if graph.preprocessing is not None:
            diffs["bytes_vs_float"] = graph.verify_bytes(
                loaded.signatures[BYTES_SIGNATURE], atol
            )
        graph.write_metadata(os.path.join(staging, METADATA_PATH), diffs)
        bar.step("publish")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    return final


def export_onnx(
    model,
    path,
    opset=17,
    *,
    embedding_layer=None,
    preprocessing=None,
    atol=1e-5,
    verify_batch_size=16,
    progress=True,
):
    """Writes the embedder (with L2 normalisation) as an ONNX file.

    The graph comes from `tf2onnx.convert.from_function` on the same float32
    function as the SavedModel's `serving_default`: input `image` float32
    `(batch, H, W, C)`, output `embedding` float32 `(batch, dim)` with unit
    norm, the dynamic axis named `batch`. Metadata properties hold
    `embedding_size`, `preprocessing` (JSON), `source` and the measured
    differences. The file is written next to `path`, checked with
    onnxruntime against Keras at batch 1 and `verify_batch_size`, then
    moved onto `path` with `os.replace`.

    Args:
        model: A trained `keras.Model` or the path of a `.keras` file.
        path: Output file.
        opset: ONNX opset (tf2onnx 1.17 supports up to 18). Defaults to `17`.
        embedding_layer: See `get_embedder`. Defaults to `None`.
        preprocessing: See `export_saved_model`. Defaults to `None`.
        atol: Largest accepted absolute difference. Defaults to `1e-5`.
        verify_batch_size: The larger verification batch. Defaults to `16`.
        progress: Whether to show a progress bar. Defaults to `True`.

    Returns:
        `path` as a str.

    Raises:
        ValueError: If the model has no usable embedding output.
        ExportVerificationError: If onnxruntime differs from Keras by more
            than `atol` or gives non-finite embeddings.

    Example:

    >>> keras_circle.export.export_onnx(trainer, "embedder.onnx")
    """
    import onnx
    import onnxruntime
    import tf2onnx

    path = os.fspath(path)
    bar = _Steps("export_onnx", progress)
    bar.step("trace")
    graph = _ServingGraph(model, embedding_layer, preprocessing)
    proto, _ = tf2onnx.convert.from_function(
        graph.serve, input_signature=[graph.image_spec], opset=opset
    )
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, staging = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=parent
    )
    os.close(fd)
    try:
        bar.step("write")
        onnx.save(proto, staging)
        bar.step("verify")
        session = onnxruntime.InferenceSession(
            staging, providers=["CPUExecutionProvider"]
        )
        diffs = graph.verify(
            lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
            "ONNX",
            atol,
            verify_batch_size,
        )
        onnx.helper.set_model_props(
            proto,
            {k: json.dumps(v) for k, v in graph.metadata(diffs).items()},
        )
        onnx.save(proto, staging)
        bar.step("publish")
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
    finally:
        bar.close()
    return path


class _ServingGraph:
    """The float32 embedder, its preprocessing and the serving functions."""

    def __init__(self, model, embedding_layer, preprocessing):
        self.source = os.fspath(model) if _is_path(model) else model.name
        self.embedder = _as_float32(get_embedder(model, embedding_layer))
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
        }

    def write_metadata(self, path, diffs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.metadata(diffs), f, indent=2)


class _Steps:
    """A one-line progress bar over the named export steps."""

    def __init__(self, desc, enabled):
        self._bar = tqdm(total=4, desc=desc, unit="step", disable=not enabled)
        self._started = False

    def step(self, name):
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def close(self):
        if not self._bar.disable and self._bar.n < self._bar.total:
            self._bar.update(1)
        self._bar.close()


def _is_path(model):
    return isinstance(model, (str, os.PathLike))


def _load(model):
    if _is_path(model):
        # Importing keras_circle.layers above registered CosineProxies.
        return keras.saving.load_model(os.fspath(model), compile=False)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model or a .keras path; got {type(model)}."
        )
    return model


def _model_inputs_outputs(model):
    try:
        return list(model.inputs), list(model.outputs)
    except (AttributeError, TypeError, ValueError):
        raise ValueError(
            f"Model {model.name!r} has no symbolic inputs/outputs (a subclassed "
            "model?); export a Functional or Sequential model."
        ) from None


def _check_embedder(embedder, what):
    inputs, outputs = _model_inputs_outputs(embedder)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"No usable embedding output in {what}: the embedder must have one "
            f"input and one output; got {len(inputs)} and {len(outputs)}."
        )
    output = outputs[0]
    if len(output.shape) != 2 or output.shape[-1] is None:
        raise ValueError(
            f"No usable embedding output in {what}: expected (batch_size, dim) "
            f"with a known dim, got shape {tuple(output.shape)}. Pass "
            "`embedding_layer=` to pick the embedding layer."
        )
    if not keras.backend.is_float_dtype(output.dtype):
        raise ValueError(f"No usable embedding output in {what}: dtype {output.dtype}.")
    return embedder


def _as_float32(embedder):
    """A float32 copy of a mixed-precision embedder (same weights)."""

    def layers(model):
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    if all(layer.compute_dtype == "float32" for layer in layers(embedder)):
        return embedder

    def to_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(
        embedder, clone_function=to_float32, recursive=True
    )
    clone.set_weights(embedder.get_weights())
    return clone


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
