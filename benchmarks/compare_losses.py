"""Circle loss against its baselines under one budget, on offline data.

Every method trains the same small CNN (64-d embedding) for the same number
of steps of 10 x 10 P x K batches with Adam on the packaged Fashion-MNIST
subset, then retrieves among the 2,000 held-out test images. Each method
uses its usual settings (the paper's for Circle loss). Prints a markdown
table (mean and standard deviation over seeds of Recall@1 and MAP@R) and
writes it to `benchmarks/results/compare_losses.md`.

    python benchmarks/compare_losses.py [--steps 150] [--seeds 0 1 2]
"""

import argparse
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

import keras_circle as kc
from keras_circle import data
from keras_circle import retrieval
from keras_circle.pipeline.models import small_cnn

METHODS = {
    # name: (labels, loss factory)
    "Circle pair (ours, 80 / 0.4)": ("pair", lambda: kc.CircleLoss(80.0, 0.4)),
    "Circle class (ours, 256 / 0.25)": (
        "class",
        lambda: kc.ClassCircleLoss(256.0, 0.25),
    ),
    "AM-Softmax (30 / 0.35)": ("class", lambda: kc.AMSoftmaxLoss(30.0, 0.35)),
    "ArcFace (64 / 0.5)": ("class", lambda: kc.ArcFaceLoss(64.0, 0.5)),
    "Triplet semi-hard (0.2)": (
        "pair",
        lambda: kc.TripletLoss(margin=0.2, l2_normalize=True),
    ),
    "keras.losses.Circle (80 / 0.4)": ("pair", lambda: keras.losses.Circle(80.0, 0.4)),
}


def run(labels, make_loss, seed, steps, train, test):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = train, test
    batches = data.pk_batches(
        data.ArraySource(x_train[..., None], y_train), p=10, k=10, seed=seed,
        preprocess=lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
        steps_per_epoch=steps,
    )  # fmt: skip
    embedder = small_cnn((28, 28, 1), embedding_dim=64, width=16)
    model = embedder
    if labels == "class":
        model = keras.Model(embedder.input, kc.CosineProxies(10)(embedder.output))
    model.compile(keras.optimizers.Adam(2e-3), make_loss(), jit_compile=True)
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
    x = embedder.predict(x_test[..., None] / 255.0, batch_size=500, verbose=0)
    return (
        retrieval.recall_at_k(x, y_test, ks=(1,), verbose=0)[1],
        retrieval.map_at_r(x, y_test, verbose=0),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--out",
        default=str(pathlib.Path(__file__).parent / "results/compare_losses.md"),
    )
    args = parser.parse_args()
    (x_train, y_train), test, _ = data.load_fashion_mnist_subset()
    rows = []
    for name, (labels, make_loss) in METHODS.items():
        start = time.time()
        scores = np.array(
            [
                run(labels, make_loss, s, args.steps, (x_train, y_train), test)
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
