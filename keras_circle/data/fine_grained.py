"""TFDS fine-grained retrieval sets and LFW (TensorFlow only: tf.data + TFDS).

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
"""

import dataclasses

import numpy as np
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


def _tfds():
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
    tfds = _tfds()
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


def load_lfw_identities(*, data_dir=None, download=False):
    """LFW from TFDS (`lfw`) with integer identity labels.

    TFDS stores each image with its person's name but not the image number
    of the official file names, so LFW's `pairs.txt` cannot be matched to
    it: use `load_lfw_pairs` on the image folder for the official protocol,
    or `sample_verification_pairs` on these labels for an LFW-like one.

    Args:
        data_dir: TFDS data folder. Defaults to `None`: TFDS's default.
        download: let TFDS download and prepare the set. Defaults to `False`.

    Returns:
        `(dataset, labels, names)`: a `tf.data.Dataset` of dicts `{"image":
        encoded bytes, "label": int64}` in TFDS order, the labels as an
        int64 array in that order, and the sorted identity names
        (`names[label]`).
    """
    tfds = _tfds()
    ds = tfds.load(
        "lfw",
        split="train",
        data_dir=data_dir,
        download=download,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    # One pass over the names only: the images stay encoded and unread.
    raw = [n.decode() for n in ds.map(lambda ex: ex["label"]).as_numpy_iterator()]
    names, labels = np.unique(np.array(raw, dtype=str), return_inverse=True)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(names), tf.range(len(names), dtype=tf.int64)
        ),
        default_value=-1,
    )
    ds = ds.map(lambda ex: {"image": ex["image"], "label": table.lookup(ex["label"])})
    return ds, labels.astype(np.int64), list(names)


def sample_verification_pairs(labels, *, num_folds=10, pairs_per_fold=300, seed=0):
    """LFW-style verification pairs drawn from identity labels.

    Identities are dealt into `num_folds` disjoint folds (as in LFW View 2,
    no person appears in two folds); each fold gets `pairs_per_fold` matched
    pairs (two different images of one identity) then `pairs_per_fold`
    mismatched pairs (two identities of the fold), all drawn with a seeded
    generator. Folds are contiguous blocks of `2 * pairs_per_fold` pairs.

    Args:
        labels: integer array `(n,)` of identity labels.
        num_folds: number of folds. Defaults to `10`.
        pairs_per_fold: matched (and mismatched) pairs per fold. Defaults to
            `300`.
        seed: integer seed. Defaults to `0`.

    Returns:
        A dict with `"index_a"`, `"index_b"` (int arrays into `labels`),
        `"is_same"` (bool) and `"folds"` (int), `2 * num_folds *
        pairs_per_fold` pairs.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(labels, return_counts=True)
    fold_of = rng.permutation(len(ids)) % num_folds
    index_a, index_b, is_same = [], [], []
    for fold in range(num_folds):
        fold_ids = ids[fold_of == fold]
        multi = fold_ids[counts[fold_of == fold] >= 2]
        if len(multi) == 0 or len(fold_ids) < 2:
            raise ValueError(
                f"Fold {fold} has too few identities for pairs: use fewer "
                f"`num_folds` (got {num_folds})."
            )
        for same in (True, False):
            for _ in range(pairs_per_fold):
                if same:
                    members = np.flatnonzero(labels == rng.choice(multi))
                    a, b = rng.choice(members, 2, replace=False)
                else:
                    id_a, id_b = rng.choice(fold_ids, 2, replace=False)
                    a = rng.choice(np.flatnonzero(labels == id_a))
                    b = rng.choice(np.flatnonzero(labels == id_b))
                index_a.append(a)
                index_b.append(b)
                is_same.append(same)
    return {
        "index_a": np.array(index_a, dtype=np.int64),
        "index_b": np.array(index_b, dtype=np.int64),
        "is_same": np.array(is_same, dtype=bool),
        "folds": np.repeat(np.arange(num_folds), 2 * pairs_per_fold),
    }
