"""`EmbeddingIndex`: a gallery searched by cosine similarity, saved with its metadata."""

import math

import faiss
import numpy as np

from keras_circle import _checks
from keras_circle.search import storage
from keras_circle.search.engine import check_matrix
from keras_circle.search.engine import ensure_threads
from keras_circle.search.engine import normalize_rows
from keras_circle.search.open_set import check_target_precision
from keras_circle.search.open_set import choose_threshold

KINDS = ("flat", "ivf", "hnsw")


def _check_labels(labels, num, name):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != num:
        raise ValueError(
            f"`{name}` must have shape ({num},), one per embedding; got shape "
            f"{labels.shape}."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype.kind == "U"):
        raise ValueError(
            f"`{name}` must be integers or strings; got dtype {labels.dtype}."
        )
    return labels


class EmbeddingIndex:
    """A gallery of embeddings searched by cosine similarity on faiss.

    Embeddings are L2-normalised on the way in (queries too), so the inner
    product faiss ranks by is the cosine similarity. Kinds:

    - `"flat"`: exact search (`IndexFlatIP`), for galleries up to a few
      million rows.
    - `"ivf"`: inverted lists (`IndexIVFFlat`): k-means cells trained on the
      first `add`, `nprobe` of `nlist` cells searched per query.
    - `"hnsw"`: a graph (`IndexHNSWFlat`, `hnsw_m` links per node), no
      training; `ef_search` sets the search breadth.

    Args:
        dim: embedding dimension.
        kind: `"flat"`, `"ivf"` or `"hnsw"`. Defaults to `"flat"`.
        embedder: what made the embeddings (a model path, name or hash),
            saved in the metadata and checked by `load`. Defaults to `None`.
        nlist: IVF cells. Defaults to `None`: `4 * sqrt(n)` of the first add.
        nprobe: IVF cells searched per query. Defaults to `16`.
        hnsw_m: HNSW links per node. Defaults to `32`.
        ef_construction: HNSW build breadth. Defaults to `80`.
        ef_search: HNSW search breadth. Defaults to `128`.

    Example:

    >>> index = keras_circle.search.EmbeddingIndex(128, embedder="model-v3")
    >>> index.add(gallery, labels=gallery_labels)
    >>> scores, ids = index.search(queries, k=5)
    """

    def __init__(
        self,
        dim,
        *,
        kind="flat",
        embedder=None,
        nlist=None,
        nprobe=16,
        hnsw_m=32,
        ef_construction=80,
        ef_search=128,
    ):
        _checks.check_integer(dim, "dim")
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}; got {kind!r}.")
        if embedder is not None and not isinstance(embedder, str):
            raise ValueError(f"`embedder` must be a string or None; got {embedder!r}.")
        params = {
            "nlist": nlist,
            "nprobe": nprobe,
            "hnsw_m": hnsw_m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
        }
        for name, value in params.items():
            if value is not None or name != "nlist":
                _checks.check_integer(value, name)
        self.dim, self.kind, self.embedder = int(dim), kind, embedder
        self.params = {k: None if v is None else int(v) for k, v in params.items()}
        self.threshold = None
        self._index = None
        self._ids = np.empty(0, np.int64)
        self._labels = None

    def __len__(self):
        return int(self._ids.size)

    @property
    def labels(self):
        """Labels of the gallery rows in insertion order, or `None`."""
        return self._labels

    @property
    def ids(self):
        """Ids of the gallery rows in insertion order (int64)."""
        return self._ids

    def embeddings(self):
        """The gallery rows as stored: float32 unit rows in insertion order.

        Row `i` belongs to `ids[i]` (and `labels[i]`). A copy read back from
        faiss (IVF and HNSW keep the rows uncompressed, so it is exact for
        every kind); `(0, dim)` for an empty index.
        """
        if self._index is None:
            return np.empty((0, self.dim), np.float32)
        index = self._index
        if isinstance(index, faiss.IndexIVF):
            # IVF rows live in their cells: a direct map (position -> cell
            # entry) is built for the read and dropped again, so the index
            # (and what `save` writes) stays as it was.
            had_map = not index.direct_map.no()
            if not had_map:
                index.make_direct_map()
            try:
                return index.reconstruct_n(0, index.ntotal)
            finally:
                if not had_map:
                    index.make_direct_map(False)
        return index.reconstruct_n(0, index.ntotal)

    def _make(self, x):
        p = self.params
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(
                self.dim, p["hnsw_m"], faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efConstruction = p["ef_construction"]
            return index
        nlist = p["nlist"] or max(1, int(4 * math.sqrt(x.shape[0])))
        if x.shape[0] < nlist:
            raise ValueError(
                f"An IVF index with nlist={nlist} cells needs at least {nlist} "
                f"embeddings in its first `add` to train on; got {x.shape[0]}."
            )
        self.params["nlist"] = nlist
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(
            quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT
        )
        index.train(x)
        return index

    def add(self, embeddings, labels=None, ids=None):
        """Adds rows to the gallery.

        Args:
            embeddings: array `(n, dim)`, normalised here.
            labels: integer or string labels `(n,)`: all adds give labels, or
                none does. Defaults to `None`.
            ids: int64 ids `(n,)`, unique in the index. Defaults to `None`:
                the running row number.
        """
        ensure_threads()
        x = normalize_rows(check_matrix(embeddings, "embeddings", dim=self.dim))
        if (labels is None) != (self._labels is None) and len(self):
            raise ValueError(
                "`labels` must be given on every `add` or on none; the index "
                f"{'has' if self._labels is not None else 'has no'} labels."
            )
        if labels is not None:
            labels = _check_labels(labels, x.shape[0], "labels")
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self) else 0
            ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        else:
            ids = np.asarray(ids)
            if ids.shape != (x.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(
                    f"`ids` must be integers of shape ({x.shape[0]},); got "
                    f"{ids.dtype} of shape {ids.shape}."
                )
            ids = ids.astype(np.int64)
            if np.unique(ids).size != ids.size or np.isin(ids, self._ids).any():
                raise ValueError(
                    "`ids` must be unique, also against those already added."
                )
        if self._index is None:
            self._index = self._make(x)
        self._index.add(x)
        self._ids = np.concatenate([self._ids, ids])
        if labels is not None:
            self._labels = (
                labels
                if self._labels is None
                else np.concatenate([self._labels, labels])
            )

    def _search(self, queries, k):
        ensure_threads()
        k = int(_checks.check_integer(k, "k"))
        if not len(self):
            raise ValueError("The index is empty: `add` embeddings before searching.")
        q = normalize_rows(check_matrix(queries, "queries", dim=self.dim))
        if self.kind == "ivf":
            self._index.nprobe = self.params["nprobe"]
        elif self.kind == "hnsw":
            self._index.hnsw.efSearch = max(self.params["ef_search"], k)
        scores, positions = self._index.search(q, k)
        found = positions >= 0
        return np.where(found, scores, -np.inf).astype(np.float32), positions, found

    def search(self, queries, k):
        """Cosine top-k of each query.

        Args:
            queries: array `(num_queries, dim)`, normalised here; its dim must
                be the index's.
            k: neighbours per query.

        Returns:
            `(scores, ids)`: float32 cosine similarities `(num_queries, k)`,
            best first, and int64 ids; where fewer than k are found (k above
            the gallery size, or an IVF probe with few rows) the ids are -1
            and the scores -inf.
        """
        scores, positions, found = self._search(queries, k)
        return scores, np.where(found, self._ids[np.where(found, positions, 0)], -1)

    def lookup(self, queries, k):
        """`search` with the neighbours' labels.

        Returns:
            `(scores, ids, labels)`; `labels` `(num_queries, k)` holds the
            neighbours' labels (-1 or "" where no neighbour was found).
        """
        if self._labels is None:
            raise ValueError("The index has no labels: pass `labels` to `add`.")
        scores, positions, found = self._search(queries, k)
        ids = np.where(found, self._ids[np.where(found, positions, 0)], -1)
        missing = -1 if np.issubdtype(self._labels.dtype, np.integer) else ""
        labels = np.where(found, self._labels[np.where(found, positions, 0)], missing)
        return scores, ids, labels

    def calibrate(self, queries, labels, *, target_precision=None):
        """Chooses the open-set distance threshold on labelled queries.

        Each query is matched to its nearest gallery row; the cosine distance
        `1 - similarity` decides: accepted when `distance <= threshold`. At
        each threshold (each distinct distance), precision is the share of
        accepted queries whose neighbour has their label, recall the share of
        all queries accepted with the right label (queries whose class is not
        in the gallery can never count), F1 their harmonic mean. The chosen
        threshold is kept in `self.threshold` (and saved) for `match`.
        Queries should be held out from the gallery: one that is in it finds
        itself at distance 0.

        Args:
            queries: array `(num_queries, dim)`.
            labels: their labels `(num_queries,)`, of the gallery's dtype kind.
            target_precision: in (0, 1]: the largest threshold whose precision
                reaches it. Defaults to `None`: the threshold of the best F1.

        Returns:
            Dict with `"threshold"`, `"precision"`, `"recall"`, `"f1"` at the
            chosen threshold and `"curve"`: arrays `"thresholds"` (rising),
            `"precision"`, `"recall"`, `"f1"`.

        Raises:
            ValueError: when no threshold reaches `target_precision`.
        """
        check_target_precision(target_precision)
        q = check_matrix(queries, "queries", dim=self.dim)
        labels = _check_labels(labels, q.shape[0], "labels")
        scores, _, neighbour_labels = self.lookup(q, 1)
        distance = 1.0 - scores[:, 0].astype(np.float64)
        correct = neighbour_labels[:, 0] == labels
        result = choose_threshold(distance, correct, target_precision)
        self.threshold = result["threshold"]
        return result

    def match(self, queries, *, threshold=None, unknown=None):
        """The label of each query's nearest row, or `unknown` beyond the threshold.

        Args:
            queries: array `(num_queries, dim)`.
            threshold: cosine distance `1 - similarity` up to which a match is
                accepted. Defaults to `None`: `self.threshold` from
                `calibrate` (or a loaded index).
            unknown: the label of rejected queries. Defaults to `None`: -1
                for integer labels, `"unknown"` for string labels.

        Returns:
            Array `(num_queries,)` of labels.
        """
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            raise ValueError("No `threshold`: pass one or run `calibrate` first.")
        if unknown is None:
            unknown = -1 if np.issubdtype(self._labels.dtype, np.integer) else "unknown"
        scores, _, neighbour_labels = self.lookup(queries, 1)
        accepted = 1.0 - scores[:, 0].astype(np.float64) <= threshold
        return np.where(accepted, neighbour_labels[:, 0], unknown)

    def metadata(self):
        """What `save` writes to `metadata.json` and `load` checks."""
        return {
            "format": storage.FORMAT,
            "dim": self.dim,
            "kind": self.kind,
            "count": len(self),
            "embedder": self.embedder,
            "threshold": self.threshold,
            "params": self.params,
            "labels": None if self._labels is None else self._labels.dtype.str,
        }

    def save(self, path):
        """Writes the index to the folder `path`, replacing it whole.

        The folder holds `index.faiss`, `arrays.npz` (ids, labels) and
        `metadata.json`. Everything is written to a new folder beside `path`
        first and renamed into place, so a failed save leaves the old index
        (or nothing) and never a half-written one.
        """
        if self._index is None:
            raise ValueError("The index is empty: nothing to save.")
        arrays = {"ids": self._ids}
        if self._labels is not None:
            arrays["labels"] = self._labels
        storage.write_folder(path, self._index, arrays, self.metadata())

    @classmethod
    def load(cls, path, *, embedder=None):
        """Reads an index written by `save` and checks it against its metadata.

        Args:
            path: the folder.
            embedder: when given, the `embedder` the index must have been
                built for. Defaults to `None`: not checked.
        """
        meta = storage.read_metadata(path, embedder)
        params = {k: v for k, v in meta["params"].items() if v is not None}
        out = cls(meta["dim"], kind=meta["kind"], embedder=meta["embedder"], **params)
        out._index, out._ids, out._labels = storage.read_arrays(path, meta)
        out.threshold = meta["threshold"]
        return out
