"""Circle loss against its baselines under one budget, on offline data.

Two data sets, both offline: `--dataset fashion_mnist` (default) and
`--dataset glyphs`, the zero-shot glyph benchmark built by
`tools/build_glyphs.py` (see `keras_circle.data.load_glyphs`).

Every peer is used as its documentation says: `keras.losses.Circle` asks
for L2-normalised embeddings, so it trains behind a
`keras.layers.UnitNormalization` (our losses normalise inside).

Fashion-MNIST: every method trains the same small CNN (64-d embedding) for the same number
of steps of 10 x 10 P x K batches with Adam on the packaged Fashion-MNIST
subset, then retrieves among the 2,000 held-out test images. Each method
uses its usual settings (the paper's for Circle loss). Prints a markdown
table (mean and standard deviation over seeds of Recall@1 and MAP@R) and
writes it to `benchmarks/results/compare_losses.md`.

    python benchmarks/compare_losses.py [--steps 150] [--seeds 0 1 2]

Glyphs: the same small CNN (48x48 input, 128-d) trains on the 1,900
training classes with 32 x 4 P x K batches and retrieves among the 28,500
test images of the 1,900 unseen classes: MAP@R (the headline), Recall@1/2/4/8,
and cross-typeface Recall@1/4 (queries drawn by one group of typefaces, the
gallery by the other). Writes `benchmarks/results/zero_shot_glyphs.json` and
a PNG of the table next to it.

    python benchmarks/compare_losses.py --dataset glyphs [--steps 300]
        [--seeds 0 1 2] [--methods NAME ...] [--cache-dir DIR]
"""

import argparse
import json
import os
import pathlib
import platform
import time

import keras
import numpy as np
import tensorflow as tf

import keras_circle as kc
from keras_circle import data
from keras_circle import glyph_demo
from keras_circle import retrieval
from keras_circle.pipeline.models import small_cnn


def _unit_normalized(model):
    """`model` followed by `keras.layers.UnitNormalization`."""
    return keras.Model(model.input, keras.layers.UnitNormalization()(model.output))


METHODS = {
    # name: (labels, loss factory, training head for pair-wise labels)
    "Circle pair (ours, 80 / 0.4)": ("pair", lambda: kc.CircleLoss(80.0, 0.4), None),
    "Circle class (ours, 256 / 0.25)": (
        "class",
        lambda: kc.ClassCircleLoss(256.0, 0.25),
        None,
    ),
    "AM-Softmax (30 / 0.35)": ("class", lambda: kc.AMSoftmaxLoss(30.0, 0.35), None),
    "ArcFace (64 / 0.5)": ("class", lambda: kc.ArcFaceLoss(64.0, 0.5), None),
    "Triplet semi-hard (0.2)": (
        "pair",
        lambda: kc.TripletLoss(margin=0.2, l2_normalize=True),
        None,
    ),
    "keras.losses.Circle (80 / 0.4, after UnitNormalization)": (
        "pair",
        lambda: keras.losses.Circle(80.0, 0.4),
        _unit_normalized,
    ),
}
# The losses of the glyph comparison, by the names the results file uses
# (ClassCircleLoss trains behind CosineProxies, keras.losses.Circle behind
# UnitNormalization).
GLYPH_METHODS = {
    "CircleLoss": METHODS["Circle pair (ours, 80 / 0.4)"],
    "CircleLoss (full gradient)": (
        "pair",
        lambda: kc.CircleLoss(80.0, 0.4, stop_alpha_gradient=False),
        None,
    ),
    "ClassCircleLoss": METHODS["Circle class (ours, 256 / 0.25)"],
    "AMSoftmaxLoss": METHODS["AM-Softmax (30 / 0.35)"],
    "ArcFaceLoss": METHODS["ArcFace (64 / 0.5)"],
    "TripletLoss (semi-hard)": METHODS["Triplet semi-hard (0.2)"],
    "TripletLoss (batch-hard)": (
        "pair",
        lambda: kc.TripletLoss(margin=0.2, mining="batch_hard", l2_normalize=True),
        None,
    ),
    "keras.losses.Circle": METHODS[
        "keras.losses.Circle (80 / 0.4, after UnitNormalization)"
    ],
}


def run(labels, make_loss, head, seed, steps, train, test):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = train, test
    batches = data.pk_batches(
        data.ArraySource(x_train[..., None], y_train), p=10, k=10, seed=seed,
        preprocess=lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
        steps_per_epoch=steps,
    )  # fmt: skip
    embedder = small_cnn((28, 28, 1), embedding_dim=64, width=16)
    model = head(embedder) if head else embedder
    if labels == "class":
        model = keras.Model(embedder.input, kc.CosineProxies(10)(embedder.output))
    model.compile(keras.optimizers.Adam(2e-3), make_loss(), jit_compile=True)
    model.fit(batches, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    x = embedder.predict(x_test[..., None] / 255.0, batch_size=500, verbose=0)
    return (
        retrieval.recall_at_k(x, y_test, ks=(1,), verbose=0)[1],
        retrieval.map_at_r(x, y_test, verbose=0),
    )


def run_glyphs(labels, make_loss, head, seed, steps, train, test):
    """Trains one method on the training classes; metrics on the test classes.

    The recipe (32 x 4 P x K, Adam 1e-3, small CNN, 128-d) is the glyph
    demo's: `keras_circle.glyph_demo.train_glyph_embedder`.
    """
    embedder = glyph_demo.train_glyph_embedder(
        train, make_loss(), labels=labels, head=head, seed=seed, steps=steps
    )
    return data.glyph_metrics(glyph_demo.embed_glyphs(embedder, test), test)


def _mean_std(runs, key, k=None):
    values = [r[key] if k is None else r[key][k] for r in runs]
    return float(np.mean(values)), float(np.std(values))


def plot_glyphs(results, path):
    """Bar chart of MAP@R, Recall@1 and cross-typeface Recall@1 (mean, std)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [("raw pixels", [results["raw_pixels"]])] + list(results["losses"].items())
    metrics = [
        ("MAP@R", "map_at_r", None),
        ("Recall@1", "recall_at_k", "1"),
        ("cross-typeface Recall@1", "cross_typeface_recall_at_k", "1"),
    ]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) * len(metrics) + 1))
    height = 0.8 / len(metrics)
    for m, (label, key, k) in enumerate(metrics):
        stats = [_mean_std(runs, key, k) for _, runs in rows]
        y = np.arange(len(rows)) + m * height
        ax.barh(y, [s[0] for s in stats], height, xerr=[s[1] for s in stats],
                label=label)  # fmt: skip
        for yi, (mean, _) in zip(y, stats, strict=True):
            ax.text(mean + 0.005, yi, f"{mean:.3f}", va="center", fontsize=7)
    ax.set_yticks(np.arange(len(rows)) + height, [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(
        f"Zero-shot glyphs: {results['num_test_classes']} unseen classes, "
        f"{len(results['typefaces'])} typefaces, {results['steps']} steps"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_glyphs(args):
    start = time.time()
    train = data.load_glyphs("cjk", "train", cache_dir=args.cache_dir)
    test = data.load_glyphs("cjk", "test", cache_dir=args.cache_dir)
    info = data.glyphs_info("cjk", cache_dir=args.cache_dir)
    methods = {name: GLYPH_METHODS[name] for name in args.methods or GLYPH_METHODS}
    pixels = test.images.reshape(len(test.images), -1).astype(np.float32)
    results = {
        "num_train_classes": len(train.code_points),
        "num_test_classes": len(test.code_points),
        "typefaces": test.design_names,
        "query_typefaces": [test.design_names[j] for j in test.query_designs],
        "image_size": int(test.images.shape[1]),
        "steps": args.steps,
        "batch": "32 x 4 P x K, Adam 1e-3, small CNN (width 32, 128-d)",
        "minutes": None,
        "run": {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        },
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "backend": keras.backend.backend(),
            "glyphs_images_sha256": info["sha256"]["images"],
        },
        "raw_pixels": data.glyph_metrics(pixels, test),
        "losses": {},
    }
    print("raw pixels", json.dumps(results["raw_pixels"]), flush=True)
    for name, (labels, make_loss, head) in methods.items():
        results["losses"][name] = []
        for seed in args.seeds:
            t = time.time()
            scores = run_glyphs(labels, make_loss, head, seed, args.steps, train, test)
            results["losses"][name].append({"seed": seed, **scores})
            print(f"{name} seed {seed} ({time.time() - t:.0f} s)", json.dumps(scores),
                  flush=True)  # fmt: skip
    results["minutes"] = round((time.time() - start) / 60, 1)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot_glyphs(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["fashion_mnist", "glyphs"],
                        default="fashion_mnist")  # fmt: skip
    parser.add_argument("--steps", type=int, help="150 (fashion_mnist), 300 (glyphs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="a subset of the method names")
    parser.add_argument("--cache-dir", help="glyph cache (load_glyphs's cache_dir)")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = pathlib.Path(__file__).parent / "results"
    table = GLYPH_METHODS if args.dataset == "glyphs" else METHODS
    unknown = sorted(set(args.methods or []) - set(table))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected names from {list(table)}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.dataset == "glyphs":
        args.steps = args.steps or 300
        args.out = args.out or str(results / "zero_shot_glyphs.json")
        return main_glyphs(args)
    args.steps = args.steps or 150
    args.out = args.out or str(results / "compare_losses.md")
    (x_train, y_train), test, _ = data.load_fashion_mnist_subset()
    rows = []
    for name in args.methods or METHODS:
        labels, make_loss, head = METHODS[name]
        start = time.time()
        scores = np.array(
            [
                run(labels, make_loss, head, s, args.steps, (x_train, y_train), test)
                for s in args.seeds
            ]
        )
        mean, std = scores.mean(0), scores.std(0)
        rows.append(
            f"| {name} | {mean[0]:.3f} ± {std[0]:.3f} | {mean[1]:.3f} ± {std[1]:.3f} "
            f"| {(time.time() - start) / len(args.seeds):.0f} |"
        )
        print(rows[-1], flush=True)
    (x_pix, y_pix) = test
    pixels = x_pix.reshape(len(x_pix), -1).astype("float32")
    r1 = retrieval.recall_at_k(pixels, y_pix, ks=(1,), verbose=0)[1]
    mapr = retrieval.map_at_r(pixels, y_pix, verbose=0)
    table = "\n".join(
        [
            f"Fashion-MNIST subset, held-out 2,000 test images; {args.steps} steps of "
            f"10 x 10 P x K, Adam 2e-3, small CNN (64-d); seeds {args.seeds}; "
            "mean ± std.",
            "",
            "| loss | Recall@1 | MAP@R | s / run |",
            "|---|---|---|---|",
            *rows,
            f"| raw pixels (no training) | {r1:.3f} | {mapr:.3f} | - |",
        ]
    )
    print(table)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")


if __name__ == "__main__":
    main()
