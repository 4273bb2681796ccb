"""TFDS fine-grained retrieval sets (TensorFlow only, extras `[tensorflow,tfds]`).

CUB-200-2011 (`caltech_birds2011`), Cars196 (`cars196`) and Stanford Online
Products (`stanford_online_products`) with the standard zero-shot protocol:
the TFDS `train` and `test` splits are merged first (the protocol splits all
images by class), then the first half of the classes trains and the unseen
second half tests (CUB 0-99 / 100-199, Cars196 0-97 / 98-195, SOP 11,318 /
11,316 classes by `class_id`). Images are left encoded
(`tfds.decode.SkipDecoding`) so that reading labels or filtering by class
decodes nothing; decode them in `preprocess_fine_grained` or `TfdsSource`.
Nothing is downloaded unless asked: prepare the sets with `tfds build` first
or pass `download=True`.

The LFW loaders that used to sit here (`load_lfw_identities`,
`sample_verification_pairs`) live in `keras_circle.data.faces`; importing
them from this module still works, with a `DeprecationWarning`.
"""

import dataclasses
import warnings

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class _Spec:
    tfds_name: str
    label_key: str
    num_classes: int
    num_train_classes: int


# Label feature names checked in the TFDS 4.9 builders; class ids are the
# official ones minus 1 (CUB and Cars `label`, SOP `class_id`).
FINE_GRAINED_SETS = {
    "cub": _Spec("caltech_birds2011", "label", 200, 100),
    "cars196": _Spec("cars196", "label", 196, 98),
    "sop": _Spec("stanford_online_products", "class_id", 22634, 11318),
}
_ALIASES = {spec.tfds_name: key for key, spec in FINE_GRAINED_SETS.items()}


def import_tfds():
    """`tensorflow_datasets`, or an ImportError naming the `[tfds]` extra."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "The TFDS loaders need tensorflow-datasets: "
            "pip install 'keras-circle[tfds]'."
        ) from error
    return tfds


def load_fine_grained(name, split, *, data_dir=None, download=False):
    """A zero-shot split of CUB-200-2011, Cars196 or SOP from TFDS.

    Args:
        name: `"cub"`, `"cars196"` or `"sop"` (or the TFDS name).
        split: `"train"` (first half of the classes) or `"test"` (second
            half, classes never seen in training).
        data_dir: TFDS data folder. Defaults to `None`: TFDS's default.
        download: let TFDS download and prepare the set. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of dicts `{"image": encoded bytes, "label":
        int64 class id}` over all images of the split's classes. Class ids
        are kept as in TFDS (test ids start at the number of train classes).

    Example:

    >>> ds = keras_circle.data.load_fine_grained("cub", "train")
    >>> src = keras_circle.data.TfdsSource(ds)
    """
    key = _ALIASES.get(name, name)
    if key not in FINE_GRAINED_SETS:
        raise ValueError(
            f"`name` must be one of {sorted(FINE_GRAINED_SETS)}; got {name!r}."
        )
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    spec = FINE_GRAINED_SETS[key]
    tfds = import_tfds()
    ds = tfds.load(
        spec.tfds_name,
        split="train+test",
        data_dir=data_dir,
        download=download,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    cut = spec.num_train_classes
    ds = ds.map(
        lambda ex: {
            "image": ex["image"],
            "label": tf.cast(ex[spec.label_key], tf.int64),
        }
    )
    if split == "train":
        return ds.filter(lambda ex: ex["label"] < cut)
    return ds.filter(lambda ex: ex["label"] >= cut)


_MOVED_TO_FACES = ("load_lfw_identities", "sample_verification_pairs")


def __getattr__(name):
    # The old import path of the LFW loaders, kept for one release.
    if name in _MOVED_TO_FACES:
        warnings.warn(
            f"`keras_circle.data.fine_grained.{name}` moved to "
            f"`keras_circle.data.faces.{name}` (also `keras_circle.data.{name}`); "
            "the old path will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from keras_circle.data import faces

        return getattr(faces, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
