"""`keras-circle index` and `keras-circle search`: a saved faiss index of images.

`index MODEL DATA --out DIR` embeds images (a folder with one sub-folder
per label, or an `.npz` of uint8 images with optional labels) and saves an
`EmbeddingIndex` to DIR. MODEL is a `.keras` file or an exported SavedModel
version folder; the images get the test-time preprocessing the export
records (for a `.keras` file: `keras_circle.export.default_preprocessing`,
changed by `--normalization` / `--center-crop`). The index records the
model's fingerprint as its `embedder`, and `DIR/keras_circle_index.json`
the model path and the preprocessing.

`search DIR IMAGE...` embeds the images with that model (or `--model`) and
prints the top-k gallery ids, scores and labels; a model whose fingerprint
differs from the index's is refused. Heavy imports happen in the runners.
"""

import json
import math
import os
import sys

from keras_circle import cli_options as options

SIDECAR = "keras_circle_index.json"
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def add_index(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "index",
        run_index,
        help="Embed a folder or .npz of images and save a search index.",
        description="Builds an EmbeddingIndex from images with a model's "
        "test-time preprocessing and saves it to --out.",
    )
    parser.add_argument(
        "model", help="A .keras file or an exported SavedModel version."
    )
    parser.add_argument(
        "data",
        help="A folder (DATA/<label>/<image>, or images directly) or an .npz "
        "with `x` or `images` (uint8) and optional `labels` or `y`.",
    )
    parser.add_argument("--out", required=True, help="Folder to save the index to.")
    parser.add_argument(
        "--images-key", help="The .npz array of images (default: `x` or `images`)."
    )
    parser.add_argument(
        "--labels-key", help="The .npz array of labels (default: `labels` or `y`)."
    )
    parser.add_argument(
        "--kind", choices=["flat", "ivf", "hnsw"], default="flat", help="Index kind."
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Images per batch.")
    options.add_preprocessing_flags(
        parser,
        "Pixel normalization for a .keras model (default: detected from the model).",
        "Resize the shorter side to this, then crop the centre (as "
        "fine-grained evaluation does), for a .keras model.",
    )
    options.add_no_progress(parser)


def add_search(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "search",
        run_search,
        help="Print the nearest gallery images of query images.",
        description="Embeds the images with the index's model and prints the "
        "top-k ids, cosine scores and labels.",
    )
    parser.add_argument("index", help="A folder written by `keras-circle index`.")
    parser.add_argument("images", nargs="+", help="Query image files.")
    parser.add_argument("--k", type=int, default=5, help="Neighbours per image (5).")
    parser.add_argument(
        "--model", help="The model to embed with (default: the one that built it)."
    )


class Embedder:
    """A `.keras` model or SavedModel version, with its preprocessing spec.

    Args:
        path: A `.keras` file or a SavedModel version folder.
        preprocessing: Changes to the spec (a `.keras` model only).
    """

    def __init__(self, path, preprocessing=None):
        from keras_circle import export
        from keras_circle.data import check_spec

        path = os.fspath(path)
        meta_path = os.path.join(path, export.METADATA_PATH)
        if os.path.isdir(path):
            if not os.path.isfile(meta_path):
                raise ValueError(
                    f"MODEL {path!r} is a folder without {export.METADATA_PATH}: "
                    "give a .keras file or a SavedModel version keras-circle exported."
                )
            if preprocessing:
                raise ValueError(
                    "--normalization/--center-crop apply to a .keras model; a "
                    "SavedModel uses the preprocessing it was exported with."
                )
            import tensorflow as tf

            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            self.fingerprint = meta["fingerprint"]
            self.preprocessing = check_spec(meta["preprocessing"])
            serve = tf.saved_model.load(path).signatures[export.SERVING_SIGNATURE]
            self._embed = lambda x: serve(**{export.INPUT_NAME: tf.constant(x)})[
                export.OUTPUT_NAME
            ].numpy()
        else:
            import numpy as np

            embedder = export.get_embedder(path)
            self.fingerprint = export.model_fingerprint(embedder)
            default = export.default_preprocessing(embedder)
            if default is None:
                raise ValueError(
                    f"MODEL {path!r} does not take images (input "
                    f"{tuple(embedder.inputs[0].shape)})."
                )
            shape = tuple(embedder.inputs[0].shape)
            self.preprocessing = check_spec(
                preprocessing or {}, default=default, input_shape=shape
            )

            def embed(x):
                y = np.asarray(embedder(x, training=False), dtype="float32")
                return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

            self._embed = embed
        self.path = os.path.abspath(path)

    def embed(self, items, batch_size=64, progress=False):
        """Embeddings `(n, dim)` of encoded images or uint8 pixel arrays."""
        import numpy as np
        import tensorflow as tf
        from tqdm.auto import tqdm

        from keras_circle.data import test_time_image

        spec = self.preprocessing
        ds = tf.data.Dataset.from_tensor_slices(items)
        ds = ds.map(lambda x: test_time_image(x, spec)).batch(batch_size)
        total = math.ceil(len(items) / batch_size)
        out = [
            self._embed(x.numpy())
            for x in tqdm(
                ds,
                total=total,
                desc="embed",
                unit="batch",
                # None: drawn only on a terminal, never into a log file.
                disable=None if progress else True,
            )
        ]
        return np.concatenate(out)


def _read_files(paths):
    """Encoded bytes of image files, with the path named on a read error."""
    import numpy as np

    encoded = []
    for path in paths:
        with open(path, "rb") as f:
            encoded.append(f.read())
    return np.array(encoded, dtype=object)


def load_images(data, images_key=None, labels_key=None):
    """`(items, labels or None)` from a folder or an `.npz` (see `index`)."""
    import numpy as np

    if os.path.isdir(data):
        folders = sorted(
            (e for e in os.scandir(data) if e.is_dir()), key=lambda e: e.name
        )
        paths, labels = [], []
        for folder in folders:
            for name in sorted(os.listdir(folder.path)):
                if name.lower().endswith(_SUFFIXES):
                    paths.append(os.path.join(folder.path, name))
                    labels.append(folder.name)
        if not paths:
            paths = [
                os.path.join(data, n)
                for n in sorted(os.listdir(data))
                if n.lower().endswith(_SUFFIXES)
            ]
            labels = None
        if not paths:
            raise ValueError(
                f"DATA {data!r} holds no image files ({', '.join(_SUFFIXES)})."
            )
        return _read_files(paths), None if labels is None else np.array(labels)
    if not data.endswith(".npz") or not os.path.isfile(data):
        raise ValueError(f"DATA {data!r} must be a folder of images or an .npz file.")
    with np.load(data, allow_pickle=False) as arrays:
        keys = [images_key] if images_key else ["x", "images"]
        key = next((k for k in keys if k in arrays), None)
        if key is None:
            raise ValueError(
                f"DATA {data!r} has no {' or '.join(f'`{k}`' for k in keys)} array; "
                f"it has {sorted(arrays)}."
            )
        images = arrays[key]
        if labels_key and labels_key not in arrays:
            raise ValueError(
                f"DATA {data!r} has no `{labels_key}` array; it has {sorted(arrays)}."
            )
        label_key = labels_key or next(
            (k for k in ("labels", "y") if k in arrays), None
        )
        labels = arrays[label_key] if label_key else None
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"DATA {data!r}: `{key}` must be uint8 images (n, H, W) or (n, H, W, C); "
            f"got {images.dtype} of shape {images.shape}."
        )
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(
            f"DATA {data!r}: `{label_key}` must have shape ({len(images)},); got "
            f"{labels.shape}."
        )
    return images, labels


def run_index(args):
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}.")
        from keras_circle.export import fingerprint_id
        from keras_circle.search import EmbeddingIndex

        embedder = Embedder(
            args.model,
            options.preprocessing_flags(args.normalization, args.center_crop),
        )
        items, labels = load_images(args.data, args.images_key, args.labels_key)
        embeddings = embedder.embed(items, args.batch_size, not args.no_progress)
        index = EmbeddingIndex(
            embeddings.shape[1],
            kind=args.kind,
            embedder=fingerprint_id(embedder.fingerprint),
        )
        index.add(embeddings, labels=labels)
        index.save(args.out)
        sidecar = {"model": embedder.path, "preprocessing": embedder.preprocessing}
        with open(os.path.join(args.out, SIDECAR), "w", encoding="utf-8") as f:
            json.dump(sidecar, f, indent=1)
    except (OSError, ValueError) as error:
        print(f"keras-circle index: error: {error}", file=sys.stderr)
        return 1
    print(f"Indexed {len(index)} images ({index.dim}-d, {args.kind}) in {args.out}")
    return 0


def run_search(args):
    try:
        if args.k < 1:
            raise ValueError(f"--k must be >= 1; got {args.k}.")
        from keras_circle.export import fingerprint_id
        from keras_circle.search import EmbeddingIndex

        sidecar_path = os.path.join(args.index, SIDECAR)
        if not os.path.isfile(sidecar_path):
            raise ValueError(
                f"{args.index!r} has no {SIDECAR}: build it with `keras-circle index`."
            )
        with open(sidecar_path, encoding="utf-8") as f:
            sidecar = json.load(f)
        model = args.model or sidecar["model"]
        embedder = Embedder(model)
        embedder.preprocessing = sidecar["preprocessing"]
        index = EmbeddingIndex.load(args.index)
        if index.embedder != fingerprint_id(embedder.fingerprint):
            built = json.loads(index.embedder or "{}").get("weights_sha256", "?")
            raise ValueError(
                f"MODEL {embedder.path!r} (weights sha256 "
                f"{embedder.fingerprint['weights_sha256'][:12]}...) is not the "
                f"embedder {args.index!r} was built with ({built[:12]}...): its "
                "embeddings are not comparable. Use that model or rebuild the index."
            )
        queries = embedder.embed(_read_files(args.images))
        if index.labels is not None:
            scores, ids, labels = index.lookup(queries, args.k)
        else:
            scores, ids = index.search(queries, args.k)
            labels = None
    except (OSError, ValueError) as error:
        print(f"keras-circle search: error: {error}", file=sys.stderr)
        return 1
    for row, path in enumerate(args.images):
        print(path)
        for rank in range(ids.shape[1]):
            if ids[row, rank] < 0:
                continue
            label = "" if labels is None else f"  label={labels[row, rank]}"
            print(
                f"  {rank + 1}. id={ids[row, rank]}  score={scores[row, rank]:.4f}{label}"
            )
    return 0
