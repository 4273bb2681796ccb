"""Face identity folders and LFW (TensorFlow only, extra `[tensorflow]`; TFDS: `[tfds]`).

Training sets such as CASIA-WebFace or MS1M exported to images come as one
folder per identity; verification uses LFW's `pairs.txt`. Those two loaders return
file lists (decode them with `files_dataset` or sample them with
`FileSource` + `pk_batches`). LFW from TFDS (`load_lfw_identities`) carries
identities but not the official image numbers, so its verification pairs are
drawn from the labels (`sample_verification_pairs`).
"""

import pathlib

import numpy as np
import tensorflow as tf

from keras_circle.data.fine_grained import import_tfds

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def load_identity_folders(root):
    """Files and integer labels from a `root/<identity>/<image>` layout.

    Identities are the sub-folder names, sorted, and numbered `0..N-1` in
    that order; images are the files with an image suffix (`.jpg`, `.jpeg`,
    `.png`, `.bmp`, any case) in each, sorted by name. Identity folders
    without images are skipped.

    Args:
        root: folder holding one sub-folder per identity.

    Returns:
        `(paths, labels, class_names)`: string array `(n,)`, int64 array
        `(n,)`, and the list of identity names (`class_names[label]`).

    Example:

    >>> paths, labels, names = keras_circle.data.load_identity_folders("casia")
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Expected the identity folder root {root}.")
    paths, labels, names = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not images:
            continue
        label = len(names)
        names.append(folder.name)
        paths += [str(p) for p in images]
        labels += [label] * len(images)
    if not names:
        raise ValueError(f"No identity folder with images under {root}.")
    return np.array(paths, dtype=str), np.array(labels, dtype=np.int64), names


def _lfw_path(root, name, index, where):
    if not index.isdigit():
        raise ValueError(f"{where}: image number {index!r} is not an integer.")
    path = root / name / f"{name}_{int(index):04d}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} does not exist.")
    return str(path)


def load_lfw_pairs(pairs_file, root):
    """LFW verification pairs from `pairs.txt`, in file order.

    Format (as released with LFW's View 2): a first line `<folds> <n>` (`10
    300`), then for each fold `n` matched lines `name idx1 idx2` followed by
    `n` mismatched lines `name1 idx1 name2 idx2`; image `idx` of `name` is
    `root/<name>/<name>_<idx:04d>.jpg`. The pairs are returned in file order,
    so the folds are contiguous blocks of `2 * n` pairs (`folds[i]` gives the
    fold of pair `i`), as 10-fold verification needs. Any malformed line or
    missing image is an error naming the file and line.

    Args:
        pairs_file: path of `pairs.txt`.
        root: folder of the LFW images (`lfw/` or an aligned copy with the
            same names).

    Returns:
        A dict with `"paths_a"`, `"paths_b"` (string arrays `(num_pairs,)`),
        `"is_same"` (bool array) and `"folds"` (int array, 0-based).

    Example:

    >>> pairs = keras_circle.data.load_lfw_pairs("pairs.txt", "lfw")
    >>> pairs["is_same"][:300].all()
    True
    """
    pairs_file, root = pathlib.Path(pairs_file), pathlib.Path(root)
    lines = pairs_file.read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not all(f.isdigit() for f in header):
        raise ValueError(
            f"{pairs_file}, line 1: expected '<folds> <pairs per fold>' such "
            f"as '10 300', got {lines[0] if lines else ''!r}."
        )
    num_folds, per_fold = int(header[0]), int(header[1])
    body = [(n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(body) != 2 * num_folds * per_fold:
        raise ValueError(
            f"{pairs_file}: the header promises {num_folds} folds of "
            f"{per_fold} matched + {per_fold} mismatched pairs "
            f"({2 * num_folds * per_fold} lines), found {len(body)}."
        )
    paths_a, paths_b, is_same = [], [], []
    for i, (number, line) in enumerate(body):
        fields = line.split()
        where = f"{pairs_file}, line {number}"
        matched = i % (2 * per_fold) < per_fold
        if matched and len(fields) == 3:
            a = _lfw_path(root, fields[0], fields[1], where)
            b = _lfw_path(root, fields[0], fields[2], where)
        elif not matched and len(fields) == 4:
            a = _lfw_path(root, fields[0], fields[1], where)
            b = _lfw_path(root, fields[2], fields[3], where)
        else:
            expected = "'name idx1 idx2'" if matched else "'name1 idx1 name2 idx2'"
            raise ValueError(
                f"{where}: expected {expected} "
                f"({'matched' if matched else 'mismatched'} pair), got {line!r}."
            )
        paths_a.append(a)
        paths_b.append(b)
        is_same.append(matched)
    return {
        "paths_a": np.array(paths_a, dtype=str),
        "paths_b": np.array(paths_b, dtype=str),
        "is_same": np.array(is_same, dtype=bool),
        "folds": np.repeat(np.arange(num_folds), 2 * per_fold),
    }


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
    tfds = import_tfds()
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
