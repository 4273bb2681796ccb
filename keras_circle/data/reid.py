"""Person re-ID folders: Market-1501 and MSMT17 (TensorFlow only, extra `[tensorflow]`).

The loaders read the released folder layouts as they are and return, per
split, the file paths with person ids and camera ids (`ReidSplit`); the
images are decoded only by the pipelines built from them (`files_dataset`,
`FileSource` for `pk_batches`). Protocol decisions, as in the papers'
evaluation code:

- Market-1501 id `-1` ("junk": bad detections) is left out of training and
  out of the gallery, which is the same as ignoring it in evaluation; pass
  `keep_junk=True` to keep it in the gallery with id `-1` instead. Id `0`
  (distractors) stays in the gallery as a negative and is left out of
  training.
- Training ids are relabelled to `0..N-1` (sorted original ids;
  `original_ids` keeps the originals). Query and gallery keep the original
  ids, so that a query and its matches share one id.
- Cameras are the 1-based numbers written in the file names.
"""

import dataclasses
import pathlib
import re

import numpy as np

from keras_circle.data.files import files_dataset

_MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s\d+_\d+_\d+\.jpg$")
_MSMT_NAME = re.compile(r"^(\d{4})_\d+_(\d{2})_\w+?_\d+_\d+\.jpg$")


@dataclasses.dataclass
class ReidSplit:
    """One split of a re-ID data set, in file order.

    Attributes:
        paths: string array `(n,)` of image paths.
        ids: int array `(n,)` of person ids (relabelled `0..N-1` in train).
        cams: int array `(n,)` of 1-based camera ids.
        original_ids: int array `(n,)` of the ids as written in the data set.
    """

    paths: np.ndarray
    ids: np.ndarray
    cams: np.ndarray
    original_ids: np.ndarray

    def __len__(self):
        return len(self.paths)

    @property
    def num_ids(self):
        return len(np.unique(self.ids))

    def dataset(self, *, preprocess=None, batch_size=None):
        """`files_dataset` of `(image, id)` in file order."""
        return files_dataset(
            self.paths, self.ids, preprocess=preprocess, batch_size=batch_size
        )


def _split(records, relabel):
    records = sorted(records)
    paths = np.array([r[0] for r in records], dtype=str)
    original = np.array([r[1] for r in records], dtype=np.int64)
    cams = np.array([r[2] for r in records], dtype=np.int64)
    ids = original
    if relabel:
        ids = np.unique(original, return_inverse=True)[1].astype(np.int64)
    return ReidSplit(paths, ids, cams, original)


def _need_dir(path):
    if not path.is_dir():
        raise FileNotFoundError(
            f"Expected the folder {path} (is the data set root right?)."
        )
    return path


def parse_market1501_name(name):
    """`(person_id, camera)` from a Market-1501 file name.

    Args:
        name: file name such as `0002_c1s1_000451_03.jpg` (4-digit id, `-1`
            for junk, `0000` for distractors; camera after `c`).

    Returns:
        `(person_id, camera)` as ints.
    """
    match = _MARKET_NAME.match(name)
    if not match:
        raise ValueError(
            f"Cannot parse the Market-1501 file name {name!r}; expected "
            "'PPPP_cCsS_FFFFFF_BB.jpg' such as '0002_c1s1_000451_03.jpg'."
        )
    return int(match.group(1)), int(match.group(2))


def load_market1501(root, *, keep_junk=False):
    """Reads the Market-1501 folder layout.

    `root` must hold `bounding_box_train/`, `query/` and
    `bounding_box_test/` with the released file names. Files that are not
    `.jpg` (such as `Thumbs.db` in some copies) are skipped; a `.jpg` whose
    name does not parse is an error naming the file.

    Args:
        root: path of the extracted `Market-1501-v15.09.15` folder.
        keep_junk: keep id `-1` gallery images (with id `-1`). Defaults to
            `False`: they are dropped, as the protocol ignores them.

    Returns:
        A dict with `"train"`, `"query"` and `"gallery"` `ReidSplit`s.

    Example:

    >>> market = keras_circle.data.load_market1501("Market-1501-v15.09.15")
    >>> market["train"].num_ids
    751
    """
    root = pathlib.Path(root)
    splits = {}
    for split, folder in [
        ("train", "bounding_box_train"),
        ("query", "query"),
        ("gallery", "bounding_box_test"),
    ]:
        records = []
        for path in sorted(_need_dir(root / folder).iterdir()):
            if path.suffix.lower() != ".jpg":
                continue
            try:
                pid, cam = parse_market1501_name(path.name)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            if pid == -1 and not (split == "gallery" and keep_junk):
                continue
            if pid == 0 and split == "train":
                continue
            records.append((str(path), pid, cam))
        splits[split] = _split(records, relabel=split == "train")
    return splits


def parse_msmt17_name(name):
    """`(person_id, camera)` from an MSMT17 file name.

    Args:
        name: file name such as `0000_000_01_0303morning_0015_0.jpg`: person
            id, image index, camera (1-based, the third field), date and
            weather, frame, detection.

    Returns:
        `(person_id, camera)` as ints.
    """
    match = _MSMT_NAME.match(name)
    if not match:
        raise ValueError(
            f"Cannot parse the MSMT17 file name {name!r}; expected "
            "'PPPP_III_CC_<date><time>_FFFF_D.jpg' such as "
            "'0000_000_01_0303morning_0015_0.jpg'."
        )
    return int(match.group(1)), int(match.group(2))


def _read_msmt_list(list_path, image_dir):
    records = []
    lines = list_path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{list_path}, line {number}"
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{where}: expected 'folder/file.jpg <id>', got {line!r}.")
        path = image_dir / fields[0]
        try:
            _, cam = parse_msmt17_name(path.name)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} does not exist.")
        records.append((str(path), int(fields[1]), cam))
    return records


def load_msmt17(root, *, include_val=True):
    """Reads the MSMT17 (V1) folder layout.

    Assumed layout, as released: `root/train/<id>/<file>.jpg`,
    `root/test/<id>/<file>.jpg` and the lists `list_train.txt`,
    `list_val.txt` (paths under `train/`), `list_query.txt`,
    `list_gallery.txt` (paths under `test/`), one `<id folder>/<file>.jpg
    <id>` per line, e.g. `0000/0000_000_01_0303morning_0015_0.jpg 0`. The
    ids are taken from the lists (0-based; train and test ids are separate
    ranges of people); the camera from the file name (third field, 1-based,
    1-15). The order of the lists is kept. MSMT17 has no junk or distractor
    ids.

    Args:
        root: path of the `MSMT17_V1` folder.
        include_val: add `list_val.txt` to training, as the usual protocol
            (training on the 32,621 train + val images) does. Defaults to
            `True`.

    Returns:
        A dict with `"train"`, `"query"` and `"gallery"` `ReidSplit`s
        (plus `"val"` when `include_val=False`).
    """
    root = pathlib.Path(root)
    train_dir, test_dir = _need_dir(root / "train"), _need_dir(root / "test")
    lists = {
        "train": ("list_train.txt", train_dir),
        "val": ("list_val.txt", train_dir),
        "query": ("list_query.txt", test_dir),
        "gallery": ("list_gallery.txt", test_dir),
    }
    records = {}
    for split, (name, image_dir) in lists.items():
        list_path = root / name
        if not list_path.is_file():
            raise FileNotFoundError(f"Expected the list file {list_path}.")
        records[split] = _read_msmt_list(list_path, image_dir)
    if include_val:
        records["train"] += records.pop("val")
    return {
        split: _split(recs, relabel=split in ("train", "val"))
        for split, recs in records.items()
    }
