"""An `EmbeddingIndex` folder on disk: written whole or not at all, checked when read.

The folder holds `index.faiss` (the faiss index), `arrays.npz` (ids and,
when the index has them, labels) and `metadata.json` (`EmbeddingIndex.metadata`).
"""

import json
import os
import pathlib
import shutil
import tempfile

import faiss
import numpy as np

FORMAT = 1
# The faiss class each kind is built as; `read_arrays` refuses any other.
FAISS_TYPES = {
    "flat": faiss.IndexFlatIP,
    "ivf": faiss.IndexIVFFlat,
    "hnsw": faiss.IndexHNSWFlat,
}


def write_folder(path, index, arrays, metadata):
    """Writes the folder `path`, replacing it whole.

    Everything is written to a new folder beside `path` first and renamed
    into place, so a failed write leaves the old folder (or nothing) and
    never a half-written one.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=1))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_metadata(path, embedder=None):
    """The folder's metadata, checked for its format and (if given) `embedder`."""
    path = pathlib.Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise ValueError(f"{path} is not a saved EmbeddingIndex: no metadata.json.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}.")
    if embedder is not None and meta["embedder"] != embedder:
        raise ValueError(
            f"{path} holds embeddings of embedder {meta['embedder']!r}, not "
            f"{embedder!r}: queries from another model are not comparable."
        )
    return meta


def read_arrays(path, meta):
    """`(faiss index, ids, labels or None)`, checked against `meta`."""
    path = pathlib.Path(path)
    index = faiss.read_index(str(path / "index.faiss"))
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        ids = arrays["ids"]
        labels = arrays["labels"] if "labels" in arrays else None
    found = {
        "dim": index.d,
        "count": index.ntotal,
        "ids": ids.size,
        "labels": meta["count"] if labels is None else labels.size,
    }
    wanted = {"dim": meta["dim"], "count": meta["count"]}
    wanted.update(ids=meta["count"], labels=meta["count"])
    bad = [
        f"{key} {found[key]} (metadata: {wanted[key]})"
        for key in found
        if found[key] != wanted[key]
    ]
    if not isinstance(index, FAISS_TYPES[meta["kind"]]):
        bad.append(f"kind {type(index).__name__} (metadata: {meta['kind']})")
    if bad:
        raise ValueError(f"{path} does not match its metadata: {', '.join(bad)}.")
    return index, ids, labels
