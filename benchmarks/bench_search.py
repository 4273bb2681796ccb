"""Search benchmarks: the retrieval metrics against bare faiss, and approximate indexes at scale.

`--ratio N`: `retrieval.recall_at_k` (ks 1, 2, 4, 8) and `map_at_r` on an
N x 128 clustered gallery, timed in one process against a bare faiss
`IndexFlatIP` self-search (k=9, resp. top-R) plus the label comparison.

`--scale N`: an N-row, 128-d gallery and `--queries` queries; build and
search time, RSS increase and recall@10 against exact search for exact
faiss, IVF and HNSW `EmbeddingIndex`es and scikit-learn's brute-force
`NearestNeighbors` (cosine). Data not trivially separable: the packaged
Fashion-MNIST subset (10,000 images, 10 classes), projected on its 128
principal components of pixel space, grown to N by adding Gaussian noise of
0.5x the per-dimension spread to randomly drawn rows (classes overlap).
"""

import argparse
import os
import time

import numpy as np


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _clustered(rng, n, dim=128, per_class=20):
    classes = max(1, n // per_class)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    x = centres[labels] + 1.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


def ratio(n):
    import faiss

    from keras_circle import retrieval
    from keras_circle import search

    x, labels = _clustered(np.random.default_rng(0), n)
    search.set_num_threads()
    t = time.perf_counter()
    u = search.normalize_rows(x)
    index = faiss.IndexFlatIP(u.shape[1])
    index.add(u)
    _, ids = index.search(u, 9)
    hits = labels[ids[:, 1:]] == labels[:, None]
    bare = {k: hits[:, :k].any(axis=1).mean() for k in (1, 2, 4, 8)}
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    ours = retrieval.recall_at_k(x, labels, verbose=0)
    t_ours = time.perf_counter() - t
    print(
        f"recall_at_k {n:,}: ours {t_ours:.1f} s, bare faiss k=9 {t_bare:.1f} s, "
        f"ratio {t_ours / t_bare:.2f}; recall@1 {ours[1]:.4f} (bare {bare[1]:.4f})"
    )
    r = np.bincount(labels)[labels] - 1
    t = time.perf_counter()
    u = search.normalize_rows(x)
    index = faiss.IndexFlatIP(u.shape[1])
    index.add(u)
    _, ids = index.search(u, int(r.max()) + 1)
    rel = labels[ids[:, 1:]] == labels[:, None]
    rel &= np.arange(1, ids.shape[1]) <= r[:, None]
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    retrieval.map_at_r(x, labels, verbose=0)
    t_ours = time.perf_counter() - t
    print(
        f"map_at_r {n:,}: ours {t_ours:.1f} s, bare faiss top-R {t_bare:.1f} s, "
        f"ratio {t_ours / t_bare:.2f}",
        flush=True,
    )


def _fashion_base(dim):
    from keras_circle.data import load_fashion_mnist_subset

    (x_train, _), (x_test, _), _ = load_fashion_mnist_subset()
    pixels = np.concatenate([x_train, x_test]).reshape(-1, 784).astype(np.float32)
    pixels -= pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels, full_matrices=False)
    return pixels @ vt[:dim].T


def _fashion(base, n, rng):
    dim = base.shape[1]
    spread = base.std(axis=0)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        rows = rng.integers(0, len(base), stop - start)
        x[start:stop] = base[rows] + 0.5 * spread * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    return x


def scale(n, num_queries, kinds, sklearn_queries):
    from keras_circle import search

    rng = np.random.default_rng(0)
    base = _fashion_base(128)
    gallery = _fashion(base, n, rng)
    queries = _fashion(base, num_queries, rng)
    truth = None
    print(
        f"| index | gallery | build (s) | search {num_queries:,} q (s) | RSS increase (MiB) | recall@10 vs exact |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        base = _rss()
        t = time.perf_counter()
        index = search.EmbeddingIndex(
            128, kind=kind, nlist=min(1024, n // 40), nprobe=24
        )
        if kind == "ivf" and n > 100_000:  # trained on 100k rows: 1M takes minutes
            index.add(gallery[:100_000])
            index.add(gallery[100_000:])
        else:
            index.add(gallery)
        build = time.perf_counter() - t
        t = time.perf_counter()
        _, ids = index.search(queries, 10)
        took = time.perf_counter() - t
        if kind == "flat":
            truth = ids
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]
        )
        print(
            f"| {kind} | {n:,} | {build:.1f} | {took:.1f} | {(_rss() - base) / 2**20:.0f} | {recall:.3f} |",
            flush=True,
        )
        del index
    if sklearn_queries:
        from sklearn.neighbors import NearestNeighbors

        base = _rss()
        t = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(
            gallery
        )
        build = time.perf_counter() - t
        t = time.perf_counter()
        ids = nn.kneighbors(queries[:sklearn_queries], return_distance=False)
        took = time.perf_counter() - t
        recall = np.mean(
            [
                len(set(a) & set(b)) / 10
                for a, b in zip(ids, truth[:sklearn_queries], strict=True)
            ]
        )
        print(
            f"| scikit-learn brute ({sklearn_queries:,} q) | {n:,} | {build:.1f} | {took:.1f} | {(_rss() - base) / 2**20:.0f} | {recall:.3f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ratio", type=int, default=0, help="gallery size of the ratio run"
    )
    parser.add_argument(
        "--scale", type=int, default=0, help="gallery size of the scale run"
    )
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--sklearn-queries", type=int, default=1000)
    args = parser.parse_args()
    if args.ratio:
        ratio(args.ratio)
    if args.scale:
        scale(args.scale, args.queries, args.kinds, args.sklearn_queries)


if __name__ == "__main__":
    main()
