"""The zero-shot glyph benchmark: characters as classes, typefaces as variation.

NumPy only (and faiss for `glyph_metrics`). The data are built once,
offline, by `keras_circle.data.glyph_build` (command line:
`tools/build_glyphs.py`; `ensure_glyphs` builds a missing set on first use)
into a cache folder (default `~/.cache/keras_circle/glyphs/<name>/`); this
module loads them, checks them against the checksums of the build's
manifest, and scores embeddings of a split with the benchmark's protocol. The "cjk" set holds 3,800 CJK Unified Ideographs (1,900 training
and 1,900 disjoint test classes), each drawn by the same 15 distinct
typefaces, 48x48 grayscale; the "tiny" set (Latin, Greek and Cyrillic
letters in matplotlib's DejaVu and STIX fonts) exists for tests.
"""

import hashlib
import json
import pathlib
import re
from typing import NamedTuple

import numpy as np

DEFAULT_GLYPHS_DIR = "~/.cache/keras_circle/glyphs"
_SPLITS = {"train": 0, "test": 1}


class Glyphs(NamedTuple):
    """One split of a glyph set.

    Attributes:
        images: uint8 `(n, size, size, 1)`, white ink on black.
        labels: int32 `(n,)`, class ids `0 .. num_classes - 1` of the split.
        designs: int32 `(n,)`, the typeface of each image (an index into
            `design_names`, shared by both splits).
        code_points: int32 `(num_classes,)`: `chr(code_points[label])` is the
            character of a class.
        design_names: the typeface names, one per design id.
        query_designs: the design ids whose images are the queries of the
            cross-typeface protocol (see `cross_typeface_split`).
    """

    images: np.ndarray
    labels: np.ndarray
    designs: np.ndarray
    code_points: np.ndarray
    design_names: list
    query_designs: list


class GlyphCacheError(ValueError):
    """A built glyph set does not match its manifest (changed or half-written)."""


def array_sha256(array):
    """sha256 of an array's dtype, shape and C-order bytes.

    The builder (`keras_circle.data.glyph_build`) writes these checksums
    into the manifest with this function.
    """
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _folder(name, cache_dir):
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(
            f"`name` must be a glyph set name such as 'cjk' or 'tiny' "
            f"(lower-case letters, digits, '-' or '_'); received {name!r}."
        )
    base = pathlib.Path(cache_dir or DEFAULT_GLYPHS_DIR).expanduser()
    folder = base / name
    if (
        not (folder / "manifest.json").is_file()
        or not (folder / "glyphs.npz").is_file()
    ):
        raise FileNotFoundError(
            f"No glyph set {name!r} in {folder} (manifest.json and glyphs.npz "
            f"expected). Build it once with `python tools/build_glyphs.py "
            f"--name {name} --cache-dir {base}`; it names the Debian font "
            "packages it needs if any are missing."
        )
    return folder


def ensure_glyphs(name="cjk", cache_dir=None, *, verbose=True):
    """Builds glyph set `name` into `cache_dir` unless it is there already.

    A set whose `manifest.json` and `glyphs.npz` exist is left as it is
    (`load_glyphs` checks it); a missing one is rendered from the installed
    fonts (a few seconds to a minute), or, when font files are missing,
    nothing is written and `MissingFontsError` names the Debian packages to
    install.

    Args:
        name: the glyph set, `"cjk"` or `"tiny"`. Defaults to `"cjk"`.
        cache_dir: the folder holding `<name>/`. Defaults to
            `~/.cache/keras_circle/glyphs`.
        verbose: print the build's progress lines. Defaults to `True`.

    Returns:
        The folder of the set, a `pathlib.Path`.

    Raises:
        keras_circle.data.glyph_fonts.MissingFontsError: the set must be
            built and font files are missing.
    """
    from keras_circle.data import glyph_build
    from keras_circle.data import glyph_fonts

    glyph_fonts.designs_of(name)  # rejects an unknown name before any I/O
    base = pathlib.Path(cache_dir or DEFAULT_GLYPHS_DIR).expanduser()
    folder = base / name
    if (
        not (folder / "manifest.json").is_file()
        or not (folder / "glyphs.npz").is_file()
    ):
        glyph_build.build(name, base, verbose=verbose)
    return folder


def glyphs_info(name="cjk", cache_dir=None):
    """The manifest of a built glyph set as a dict.

    It records the typefaces (package, file, face index, licence, sha256 of
    the font file, group), the class counts, the image size, the versions of
    Pillow and FreeType that drew the images, and the sha256 of every array.

    Args:
        name: the glyph set, `"cjk"` or `"tiny"`. Defaults to `"cjk"`.
        cache_dir: the folder holding `<name>/`. Defaults to
            `~/.cache/keras_circle/glyphs`.
    """
    folder = _folder(name, cache_dir)
    return json.loads((folder / "manifest.json").read_text())


def load_glyphs(name="cjk", split="train", cache_dir=None):
    """Loads one split of a glyph set built by `tools/build_glyphs.py`.

    Every class is one character and every image of a class is that
    character in another typeface; the training and test classes are
    disjoint, so the test split measures retrieval of unseen classes
    (zero-shot). The arrays are checked against the sha256 sums of the
    build's manifest: a cache that was changed or half-written raises
    `GlyphCacheError` (a `ValueError`) instead of loading.

    Args:
        name: the glyph set, `"cjk"` or `"tiny"`. Defaults to `"cjk"`.
        split: `"train"` or `"test"`. Defaults to `"train"`.
        cache_dir: the folder holding `<name>/`. Defaults to
            `~/.cache/keras_circle/glyphs`.

    Returns:
        A `Glyphs` named tuple: `images` uint8 `(n, size, size, 1)`,
        `labels` int32 `(n,)` in `0 .. num_classes - 1`, `designs` int32
        `(n,)`, `code_points`, `design_names`, `query_designs`.

    Example:

    >>> test = keras_circle.data.load_glyphs("cjk", split="test")
    >>> test.images.shape, len(test.code_points)
    ((28500, 48, 48, 1), 1900)
    """
    if split not in _SPLITS:
        raise ValueError(f"`split` must be 'train' or 'test'; received {split!r}.")
    folder = _folder(name, cache_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / "glyphs.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    expected = manifest.get("sha256", {})
    for key in ("images", "labels", "designs", "code_points", "class_split"):
        if key not in arrays or array_sha256(arrays[key]) != expected.get(key):
            raise GlyphCacheError(
                f"{folder / 'glyphs.npz'}: array {key!r} is missing or does not "
                f"match the sha256 in {folder / 'manifest.json'}; rebuild it with "
                f"`python tools/build_glyphs.py --name {name} "
                f"--cache-dir {folder.parent}`."
            )
    classes = np.flatnonzero(arrays["class_split"] == _SPLITS[split])
    keep = np.isin(arrays["labels"], classes)
    # Class ids of a split are 0 .. num_classes - 1, in the order the build
    # stored the classes.
    labels = np.searchsorted(classes, arrays["labels"][keep]).astype(np.int32)
    return Glyphs(
        images=arrays["images"][keep][..., None],
        labels=labels,
        designs=arrays["designs"][keep].astype(np.int32),
        code_points=arrays["code_points"][classes],
        design_names=[d["name"] for d in manifest["designs"]],
        query_designs=list(manifest["query_designs"]),
    )


def cross_typeface_split(designs, query_designs):
    """Positions of the queries and of the gallery for cross-typeface retrieval.

    Queries are the images drawn by `query_designs`, the gallery the images
    drawn by every other typeface, so a query never finds its own typeface
    (or a near twin of it) in the gallery: the embedding has to carry the
    character across designs. The groups are fixed by the build (the
    `query_designs` of `load_glyphs`), so the protocol is deterministic.

    Args:
        designs: int array `(n,)`, the typeface of each image.
        query_designs: the design ids whose images are the queries.

    Returns:
        `(query_index, gallery_index)`: int arrays of positions into
        `designs`, disjoint, together covering every image.
    """
    designs = np.asarray(designs)
    if designs.ndim != 1 or not np.issubdtype(designs.dtype, np.integer):
        raise ValueError(
            "`designs` must be a 1-D integer array of typeface ids; received "
            f"dtype {designs.dtype} and shape {designs.shape}."
        )
    query = np.isin(designs, np.asarray(query_designs, dtype=designs.dtype))
    if query.all() or not query.any():
        raise ValueError(
            f"`query_designs`={list(query_designs)} must name some, but not all, "
            f"of the typefaces in `designs` ({sorted(set(designs.tolist()))})."
        )
    return np.flatnonzero(query), np.flatnonzero(~query)


def glyph_metrics(embeddings, glyphs, *, ks=(1, 2, 4, 8), cross_ks=(1, 4)):
    """The benchmark's scores of embeddings of one split (the unseen classes).

    MAP@R (the headline: near-duplicate typefaces make Recall@1 easy) and
    Recall@K with every image querying all others of the split, and
    cross-typeface Recall@K: the images of the query typefaces
    (`glyphs.query_designs`) query the images of the other typefaces only
    (`cross_typeface_split`), so no query finds its own design.

    Args:
        embeddings: float `(n, dim)`, one row per image of `glyphs` (raw
            pixels flattened are the baseline). Compared by cosine.
        glyphs: the `Glyphs` split the rows embed, in its order.
        ks: the K of Recall@K. Defaults to `(1, 2, 4, 8)`.
        cross_ks: the K of cross-typeface Recall@K. Defaults to `(1, 4)`.

    Returns:
        `{"map_at_r": float, "recall_at_k": {"1": float, ...},
        "cross_typeface_recall_at_k": {"1": float, ...}}` (keys as strings,
        as in `benchmarks/results/zero_shot_glyphs.json`).
    """
    from keras_circle import retrieval

    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(glyphs.labels):
        raise ValueError(
            f"`embeddings` must be `(n, dim)` with one row per image of the split "
            f"(n={len(glyphs.labels)}); received shape {embeddings.shape}."
        )
    labels = glyphs.labels
    recall = retrieval.recall_at_k(embeddings, labels, ks=ks, verbose=0)
    query, gallery = cross_typeface_split(glyphs.designs, glyphs.query_designs)
    # Query typefaces against the other typefaces' images (not leave-one-out).
    cross = retrieval.recall_at_k(
        embeddings[query],
        labels[query],
        ks=cross_ks,
        reference=embeddings[gallery],
        reference_labels=labels[gallery],
        verbose=0,
    )
    return {
        "map_at_r": float(retrieval.map_at_r(embeddings, labels, verbose=0)),
        "recall_at_k": {str(k): float(v) for k, v in recall.items()},
        "cross_typeface_recall_at_k": {str(k): float(v) for k, v in cross.items()},
    }
