"""`export_saved_model` and `export_onnx`: check, write, verify, publish."""

import json
import math
import numbers
import os
import sys

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from keras_circle import console
from keras_circle.export import publish
from keras_circle.export.fingerprint import METADATA_PATH
from keras_circle.export.fingerprint import check_shape_change
from keras_circle.export.graph import BYTES_SIGNATURE
from keras_circle.export.graph import IDS_NAME
from keras_circle.export.graph import INPUT_NAME
from keras_circle.export.graph import OUTPUT_NAME
from keras_circle.export.graph import SCORES_NAME
from keras_circle.export.graph import SEARCH_SIGNATURE
from keras_circle.export.graph import SERVING_SIGNATURE
from keras_circle.export.graph import ServingGraph

# tf2onnx 1.17 converts up to opset 18; 13 (ONNX 1.8, 2020) is the oldest
# one the tests convert and run.
MIN_OPSET = 13
MAX_OPSET = 18
MAX_VERSION = 2**63 - 1  # TF Serving versions are int64
# tf2onnx folds the gallery into the graph as a constant: 100k x 128
# converted in 15 s, 1M x 128 exhausted 23 GB without finishing. Larger
# galleries belong in the SavedModel's variables or a faiss index.
MAX_ONNX_GALLERY_VALUES = 2**24


def export_saved_model(
    model,
    base_dir,
    version=None,
    *,
    embedding_layer=None,
    preprocessing=None,
    gallery=None,
    top_k=10,
    atol=1e-5,
    verify_batch_size=16,
    allow_shape_change=False,
    progress=True,
):
    """Writes the embedder as TF Serving version `base_dir/<version>/`.

    The SavedModel (tag `serve`) has two signatures, both returning
    `embedding` (float32 `(batch, dim)`, unit L2 norm):
    `serving_default` takes `image`, float32 `(batch, H, W, C)` already
    preprocessed; `serving_bytes` takes `image_bytes`, a string `(batch,)` of
    encoded JPEG/PNG/GIF/BMP images that it decodes and preprocesses with
    `keras_circle.data.test_time_image` and the `preprocessing` spec (the
    evaluation pipeline's test-time path). A wrong image shape fails at run
    time with an error naming the expected shape. With a `gallery`, a third
    signature `serving_search` takes `image` and returns `ids` (int64
    `(batch, k)`) and `scores` (float32 cosine similarities, best first),
    `k = min(top_k, gallery size)`: an exact matmul and top-k against the
    gallery stored in the SavedModel's variables (stock TF ops only).

    The version is written to a hidden staging folder in `base_dir` (see
    `keras_circle.export.publish`), loaded back and compared with Keras at
    batch 1 and `verify_batch_size`, the bytes path with Keras on the data
    module's test-time preprocessing of real PNG/JPEG images, and the search
    with exact NumPy search, then renamed onto the next free version number,
    so concurrent exports
    get distinct versions and a failure leaves `base_dir` as it was. Staging
    folders of killed exports are removed; a live export's never. Published
    folders and files get the modes the umask gives (`0755`/`0644` under
    022). `assets.extra/keras_circle.json` records the preprocessing, the
    embedding size, the source, the measured differences and the
    `model_fingerprint`. An input shape or embedding size different from the
    latest version's is refused unless `allow_shape_change=True`.

    TensorFlow backend only: with another Keras backend, save the model and
    run `KERAS_BACKEND=tensorflow keras-circle export model.keras ...`.

    Args:
        model: A trained `keras.Model` or the path of a `.keras` file.
        base_dir: The model's base directory (created if missing).
        version: Integer version in `[1, 2**63 - 1]`. Defaults to `None`: the
            next free integer at publish time.
        embedding_layer: See `get_embedder`. Defaults to `None`.
        preprocessing: A spec of `keras_circle.data.conventions` (e.g.
            `keras_circle.data.fine_grained_spec(normalization="symmetric")`,
            or a partial dict such as `{"normalization": "imagenet"}`).
            Defaults to `None`: resize to the input shape, `"none"` if the
            model rescales raw pixels itself, else `"zero_one"`.
        gallery: An `EmbeddingIndex` (of this model's embeddings), the folder
            of a saved one, or `(embeddings, ids)`. Defaults to `None`: no
            `serving_search`.
        top_k: Neighbours `serving_search` returns, capped at the gallery
            size. Defaults to `10`.
        atol: Largest accepted absolute difference from Keras, finite and
            `>= 0`. Defaults to `1e-5`.
        verify_batch_size: The larger verification batch. Defaults to `16`.
        allow_shape_change: Whether to publish a model whose input shape or
            embedding size differs from the latest version's. Defaults to
            `False`.
        progress: Whether to show a progress bar. Defaults to `True`.

    Returns:
        The path (str) of the published version directory.

    Raises:
        TypeError: If `model`, `version`, `atol` or `verify_batch_size` has
            the wrong type.
        RuntimeError: If the Keras backend is not TensorFlow.
        NotADirectoryError: If `base_dir` exists and is not a directory.
        FileExistsError: If the version already exists.
        ValueError: If an argument is out of range, the model has no usable
            float embedding output or float input, the preprocessing is
            invalid, or the shapes changed (see `allow_shape_change`).
        ExportVerificationError: If the export differs from Keras by more than
            `atol` or gives non-finite embeddings.

    Example:

    >>> path = keras_circle.export.export_saved_model(trainer, "models/emb")
    """
    check_backend("export_saved_model")
    base_dir = os.fspath(base_dir)
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(
            f"`base_dir` must be a directory (TF Serving's model base path); "
            f"{base_dir!r} exists and is not a directory."
        )
    _check_version(version, base_dir)
    _check_verification(atol, verify_batch_size)

    bar = _Steps("export_saved_model", progress)
    try:
        bar.step("trace")
        graph = ServingGraph(model, embedding_layer, preprocessing)
        if gallery is not None:
            graph.set_gallery(gallery, top_k)
        if not allow_shape_change:
            check_shape_change(base_dir, graph.fingerprint)
        archive = keras.export.ExportArchive()
        archive.track(graph.embedder)
        archive.add_endpoint(SERVING_SIGNATURE, graph.serve, [graph.image_spec])
        if graph.preprocessing is not None:
            archive.add_endpoint(BYTES_SIGNATURE, graph.serve_bytes, [graph.bytes_spec])
        if graph.gallery is not None:
            archive.add_endpoint(
                SEARCH_SIGNATURE, graph.serve_search, [graph.image_spec]
            )
        os.makedirs(base_dir, exist_ok=True)
        publish.remove_stale_staging(base_dir)
        with publish.Staging(base_dir) as staging:
            bar.step("write")
            archive.write_out(staging.path, verbose=False)
            bar.step("verify")
            loaded = tf.saved_model.load(staging.path)
            serve = loaded.signatures[SERVING_SIGNATURE]
            diffs = graph.verify(
                lambda x: serve(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy(),
                "SavedModel",
                atol,
                verify_batch_size,
            )
            if graph.preprocessing is not None:
                diffs["bytes_vs_test_time_pipeline"] = graph.verify_bytes(
                    loaded.signatures[BYTES_SIGNATURE], atol
                )
            if graph.gallery is not None:
                search = loaded.signatures[SEARCH_SIGNATURE]

                def run_search(x):
                    out = search(**{INPUT_NAME: tf.constant(x)})
                    return out[IDS_NAME].numpy(), out[SCORES_NAME].numpy()

                diffs["search_scores"] = graph.verify_search(
                    run_search, "SavedModel", atol
                )
            graph.write_metadata(os.path.join(staging.path, METADATA_PATH), diffs)
            bar.step("publish")
            if not allow_shape_change:
                # Another export may have published while this one wrote.
                check_shape_change(base_dir, graph.fingerprint)
            return staging.publish_version(base_dir, version)
    finally:
        bar.close()


def export_onnx(
    model,
    path,
    opset=17,
    *,
    embedding_layer=None,
    preprocessing=None,
    gallery=None,
    top_k=10,
    atol=1e-5,
    verify_batch_size=16,
    progress=True,
):
    """Writes the embedder (with L2 normalisation) as an ONNX file.

    The graph comes from `tf2onnx.convert.from_function` on the same float32
    function as the SavedModel's `serving_default`: input `image` float32
    `(batch, H, W, C)`, output `embedding` float32 `(batch, dim)` with unit
    norm, the dynamic axis named `batch`. With a `gallery`, two more outputs,
    `ids` (int64) and `scores` (float32) `(batch, k)`, come from a MatMul
    and a TopK against the gallery stored as an initializer (the file then
    holds `4 * n * dim` bytes of gallery; ONNX files stop at 2 GB).
    Metadata properties (JSON values) hold `embedding_size`, the whole
    `preprocessing` spec, `search`, `source`, the measured
    differences and `fingerprint` (the `model_fingerprint`). The file is
    written to a hidden staging file next to `path`, checked with
    onnxruntime against Keras at batch 1 and `verify_batch_size`, then moved
    onto `path` with `os.replace`, with the mode the umask gives (`0644`
    under 022). TensorFlow backend only, as `export_saved_model`.

    Args:
        model: A trained `keras.Model` or the path of a `.keras` file.
        path: Output file.
        opset: ONNX opset, from 13 to 18 (tf2onnx 1.17's largest). Defaults
            to `17`.
        embedding_layer: See `get_embedder`. Defaults to `None`.
        preprocessing: See `export_saved_model`. Defaults to `None`.
        gallery: See `export_saved_model`. Defaults to `None`: the file
            outputs `embedding` only.
        top_k: See `export_saved_model`. Defaults to `10`.
        atol: Largest accepted absolute difference, finite and `>= 0`.
            Defaults to `1e-5`.
        verify_batch_size: The larger verification batch. Defaults to `16`.
        progress: Whether to show a progress bar. Defaults to `True`.

    Returns:
        `path` as a str.

    Raises:
        TypeError: If `model`, `opset`, `atol` or `verify_batch_size` has the
            wrong type.
        RuntimeError: If the Keras backend is not TensorFlow.
        ValueError: If an argument is out of range or the model has no
            usable float embedding output or float input.
        ExportVerificationError: If onnxruntime differs from Keras by more
            than `atol` or gives non-finite embeddings.

    Example:

    >>> keras_circle.export.export_onnx(trainer, "embedder.onnx")
    """
    check_backend("export_onnx")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"`opset` must be an int; got {opset!r}.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be from {MIN_OPSET} to {MAX_OPSET} (what tf2onnx "
            f"converts these graphs to); got {opset}."
        )
    _check_verification(atol, verify_batch_size)
    import onnx
    import onnxruntime
    import tf2onnx

    path = os.fspath(path)
    bar = _Steps("export_onnx", progress)
    try:
        bar.step("trace")
        graph = ServingGraph(model, embedding_layer, preprocessing)
        function = graph.serve
        if gallery is not None:
            graph.set_gallery(gallery, top_k)
            if graph.gallery_numpy[0].size > MAX_ONNX_GALLERY_VALUES:
                raise ValueError(
                    f"`gallery` of shape {graph.gallery_numpy[0].shape} is too large "
                    f"for ONNX search (at most {MAX_ONNX_GALLERY_VALUES} values, "
                    "e.g. 131072 x 128: tf2onnx folds it into the graph); use "
                    "export_saved_model(..., gallery=...) or a saved EmbeddingIndex."
                )
            function = graph.serve_with_search
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=[graph.image_spec], opset=int(opset)
        )
        for value in list(proto.graph.input) + list(proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        publish.remove_stale_staging(parent)
        suffix = f"-{os.path.basename(path)}"
        with publish.Staging(parent, directory=False, suffix=suffix) as staging:
            bar.step("write")
            onnx.save(proto, staging.path)
            bar.step("verify")
            session = onnxruntime.InferenceSession(
                staging.path, providers=["CPUExecutionProvider"]
            )
            diffs = graph.verify(
                lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
                "ONNX",
                atol,
                verify_batch_size,
            )
            if graph.gallery is not None:
                diffs["search_scores"] = graph.verify_search(
                    lambda x: session.run([IDS_NAME, SCORES_NAME], {INPUT_NAME: x}),
                    "ONNX",
                    atol,
                )
            onnx.helper.set_model_props(
                proto,
                {k: json.dumps(v) for k, v in graph.metadata(diffs).items()},
            )
            onnx.save(proto, staging.path)
            bar.step("publish")
            return staging.publish_file(path)
    finally:
        bar.close()


def check_backend(what):
    """Raises `RuntimeError` in one line unless Keras runs on TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"`{what}` needs the TensorFlow backend; Keras runs on {backend!r}. "
            "Save the model (`model.save('model.keras')`) and run "
            "`KERAS_BACKEND=tensorflow keras-circle export model.keras "
            "--base-dir DIR` (the CLI switches backend by itself)."
        )


def _check_version(version, base_dir):
    if version is None:
        return
    if isinstance(version, bool) or not isinstance(version, numbers.Integral):
        raise TypeError(f"`version` must be an int; got {version!r}.")
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(
            f"`version` must be from 1 to 2**63 - 1 (TF Serving versions are "
            f"positive int64); got {version}."
        )
    final = os.path.join(base_dir, str(int(version)))
    if os.path.lexists(final):
        raise FileExistsError(f"Version {version} already exists: {final!r}.")


def _check_verification(atol, verify_batch_size):
    if isinstance(atol, bool) or not isinstance(atol, numbers.Real):
        raise TypeError(f"`atol` must be a number; got {atol!r}.")
    if not (math.isfinite(atol) and atol >= 0):
        # A nan tolerance would turn every comparison, so the check, off.
        raise ValueError(f"`atol` must be finite and >= 0; got {atol}.")
    if isinstance(verify_batch_size, bool) or not isinstance(
        verify_batch_size, numbers.Integral
    ):
        raise TypeError(
            f"`verify_batch_size` must be an int; got {verify_batch_size!r}."
        )
    if verify_batch_size < 1:
        raise ValueError(f"`verify_batch_size` must be >= 1; got {verify_batch_size}.")


class _Steps:
    """A one-line progress bar over the named export steps."""

    def __init__(self, desc, enabled):
        # A redrawn bar only on a terminal; a log file gets one plain line
        # per step instead.
        self._desc = desc
        self._lines = enabled and not console.is_terminal(sys.stderr)
        self._bar = tqdm(
            total=4, desc=desc, unit="step", disable=not enabled or self._lines
        )
        self._started = False

    def step(self, name):
        if self._lines:
            print(f"{self._desc}: {name}", file=sys.stderr, flush=True)
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def close(self):
        if not self._bar.disable and self._bar.n < self._bar.total:
            self._bar.update(1)
        self._bar.close()
