"""Small re-ID and face folders in the released layouts, built from packaged data.

NumPy and Pillow only. The small configs (`configs/small/`) run offline with
no data argument: their folder paths name a built-in set,
`"builtin:<set>[/<path inside it>]"`, which `data_path` turns into a folder
of the cache, building the set there on first use from the Fashion-MNIST
subset that ships with the package. The real loaders then read it as they
would read the released data set, so a small run exercises the same code.

- `market1501_mini`: the Market-1501 layout (`bounding_box_train/`,
  `query/`, `bounding_box_test/`, names such as `0002_c1s1_000451_03.jpg`).
- `faces_mini`: identity folders (`train/<identity>/<image>.jpg`) and the
  LFW View 2 layout (`lfw/<name>/<name>_0001.jpg` and `pairs.txt`).

An identity is one Fashion-MNIST image (one garment): each of its pictures
is that garment drawn again with a camera's colour cast and viewpoint
(re-ID) or with its own shift and lighting (faces), so matching an identity
means telling one garment from the others of its class, as re-ID and face
verification tell one person from others who look alike. Training and test
identities come from the subset's training and test images, disjoint as in
the released sets. The cache is `$KERAS_CIRCLE_CACHE_DIR/builtin/<set>/`
(default `~/.cache/keras_circle/builtin/<set>/`); a set is written into a
temporary folder and renamed into place when complete, so an interrupted
build leaves nothing that looks finished.
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
from PIL import Image

from keras_circle.data.fashion_mnist import load_fashion_mnist_subset

PREFIX = "builtin:"
CACHE_ENV = "KERAS_CIRCLE_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/keras_circle"
# Bumped whenever a builder changes what it writes: a cache of another
# version is rebuilt instead of read.
_VERSION = 1
_MANIFEST = "manifest.json"

# Market-1501 has 6 cameras; 4 keep the set small with cross-camera matches.
_CAMERAS = 4
# Per camera: an RGB colour cast, a background grey and whether it sees the
# garment mirrored (the other side of the person).
_CAMERA_TINT = np.array(
    [[1.0, 1.0, 1.0], [1.1, 0.95, 0.8], [0.8, 0.95, 1.15], [0.95, 1.1, 0.9]]
)
_CAMERA_BACKGROUND = np.array([40.0, 70.0, 25.0, 55.0])
_CAMERA_MIRRORED = np.array([False, True, False, True])


def cache_dir():
    """The cache root: `$KERAS_CIRCLE_CACHE_DIR`, else `~/.cache/keras_circle`."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _pick(labels, per_class, skip=0):
    """Indices of `per_class` images of every class (after `skip` of each)."""
    picks = [np.flatnonzero(labels == c)[skip : skip + per_class] for c in range(10)]
    # Interleaved, so identity numbers do not follow the classes.
    return np.stack(picks, axis=1).reshape(-1)


def _reid_picture(garment, cam, rng):
    """One 56x28 RGB detection box of a 28x28 garment seen by camera `cam`."""
    alpha = garment.astype(np.float64) / 255.0
    if _CAMERA_MIRRORED[cam]:
        alpha = alpha[:, ::-1]
    alpha = np.roll(alpha, rng.integers(-2, 3), axis=1)
    box = np.full((56, 28, 3), _CAMERA_BACKGROUND[cam])
    box += rng.normal(0.0, 8.0, box.shape)
    top = rng.integers(4, 25)  # where the detector's box cut the person
    box[top : top + 28] *= 1.0 - alpha[..., None]
    box[top : top + 28] += alpha[..., None] * 230.0 * _CAMERA_TINT[cam]
    return np.clip(box, 0, 255).astype(np.uint8)


def _save(image, path):
    Image.fromarray(image).save(path, "JPEG", quality=92)


def _build_market1501_mini(folder):
    """60 training ids, 60 test ids (query + gallery), distractors and junk."""
    (x_train, y_train), (x_test, y_test), _ = load_fashion_mnist_subset()
    rng = np.random.default_rng(1501)
    for name in ("bounding_box_train", "bounding_box_test", "query"):
        (folder / name).mkdir()
    frame = 0

    def write(split, pid, cam, garment):
        nonlocal frame
        frame += 1
        pid_text = "-1" if pid == -1 else f"{pid:04d}"
        name = f"{pid_text}_c{cam + 1}s1_{frame:06d}_00.jpg"
        _save(_reid_picture(garment, cam, rng), folder / split / name)

    # Training: every id on every camera, two pictures each.
    for pid, i in enumerate(_pick(y_train, 6), start=1):
        for cam in range(_CAMERAS):
            for _ in range(2):
                write("bounding_box_train", pid, cam, x_train[i])
    # Test: one query per id, from a camera that turns with the id; the
    # gallery holds its other pictures, so every query has matches on
    # other cameras (and a same-camera one, which the protocol removes).
    test = _pick(y_test, 8)
    for pid, i in enumerate(test[:60], start=61):
        query_cam = pid % _CAMERAS
        write("query", pid, query_cam, x_test[i])
        for cam in range(_CAMERAS):
            write("bounding_box_test", pid, cam, x_test[i])
    # Distractors (id 0000): other garments, negatives for every query.
    for n, i in enumerate(test[60:80]):
        write("bounding_box_test", 0, n % _CAMERAS, x_test[i])
    # Junk (id -1): boxes with no garment, ignored by the protocol.
    blank = np.zeros((28, 28), np.uint8)
    for n in range(8):
        write("bounding_box_test", -1, n % _CAMERAS, blank)


def _face_picture(garment, rng):
    """One 32x32 RGB 'aligned crop': shifted, lit and exposed its own way."""
    image = np.zeros((32, 32))
    top, left = rng.integers(0, 5, size=2)
    image[top : top + 28, left : left + 28] = garment
    gain, offset = rng.uniform(0.7, 1.2), rng.uniform(-20.0, 30.0)
    image = image * gain + offset + rng.normal(0.0, 6.0, image.shape)
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _build_faces_mini(folder, folds=5, per_fold=30):
    """150 training identities; LFW-style test identities and `pairs.txt`."""
    (x_train, y_train), (x_test, y_test), _ = load_fashion_mnist_subset()
    rng = np.random.default_rng(2007)
    for n, i in enumerate(_pick(y_train, 15), start=1):
        identity = folder / "train" / f"id_{n:04d}"
        identity.mkdir(parents=True)
        for shot in range(1, 6):
            _save(_face_picture(x_train[i], rng), identity / f"{shot:04d}.jpg")
    # LFW View 2: identity-disjoint folds, each `per_fold` matched then
    # `per_fold` mismatched pairs; image `k` of `name` is
    # `lfw/<name>/<name>_<k:04d>.jpg`.
    per_id = 3
    names = [f"Person_{n:04d}" for n in range(1, folds * 20 + 1)]
    for name, i in zip(names, _pick(y_test, folds * 2), strict=True):
        (folder / "lfw" / name).mkdir(parents=True)
        for k in range(1, per_id + 1):
            path = folder / "lfw" / name / f"{name}_{k:04d}.jpg"
            _save(_face_picture(x_test[i], rng), path)
    lines = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        members = names[fold * 20 : (fold + 1) * 20]
        matched = [(a, b) for a in (1, 2) for b in range(a + 1, per_id + 1)]
        for n in range(per_fold):
            a, b = matched[n // len(members) % len(matched)]
            lines.append(f"{members[n % len(members)]}\t{a}\t{b}")
        for _ in range(per_fold):
            first, second = rng.choice(len(members), 2, replace=False)
            ka, kb = rng.integers(1, per_id + 1, size=2)
            lines.append(f"{members[first]}\t{ka}\t{members[second]}\t{kb}")
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")


BUILTIN_SETS = {
    "market1501_mini": _build_market1501_mini,
    "faces_mini": _build_faces_mini,
}


def builtin_set(name):
    """The folder of built-in set `name`, built in the cache on first use.

    Args:
        name: `"market1501_mini"` or `"faces_mini"`.

    Returns:
        The `pathlib.Path` of the set's folder.

    Example:

    >>> root = keras_circle.data.builtin_set("market1501_mini")
    >>> keras_circle.data.load_market1501(root)["train"].num_ids
    60
    """
    if name not in BUILTIN_SETS:
        raise ValueError(
            f"Unknown built-in data set {name!r}; the built-in sets are "
            f"{sorted(BUILTIN_SETS)}."
        )
    base = cache_dir() / "builtin"
    folder = base / name
    manifest = folder / _MANIFEST
    if manifest.is_file():
        if json.loads(manifest.read_text()).get("version") == _VERSION:
            return folder
        shutil.rmtree(folder)
    elif folder.exists():
        # Not a finished build of ours (no manifest): build it afresh.
        shutil.rmtree(folder)
    base.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        BUILTIN_SETS[name](staging)
        info = {"version": _VERSION, "source": "keras_circle Fashion-MNIST subset"}
        (staging / _MANIFEST).write_text(json.dumps(info))
        try:
            staging.rename(folder)
        except OSError:
            # Another process finished the same build first: keep its copy.
            if not (folder / _MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def is_builtin(value):
    """True when a config path names a built-in set (`"builtin:..."`)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def builtin_name(value):
    """The set named by `"builtin:<set>[/<path>]"`."""
    return value[len(PREFIX) :].split("/", 1)[0]


def data_path(value):
    """A config's data path with `"builtin:<set>[/<path>]"` made real.

    Args:
        value: A path, or `"builtin:<set>"` optionally followed by
            `/<path inside the set>` (such as `"builtin:faces_mini/pairs.txt"`).

    Returns:
        `value` unchanged when it is not a built-in path, else the path in
        the cache (the set is built there first if it is missing).
    """
    if not is_builtin(value):
        return value
    name, _, inside = value[len(PREFIX) :].partition("/")
    return str(builtin_set(name) / inside) if inside else str(builtin_set(name))
