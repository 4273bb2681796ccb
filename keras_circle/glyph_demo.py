"""TensorFlow-only: the zero-shot glyph demo (`keras-circle demo --dataset glyphs`).

Trains the small CNN with the pair-wise Circle loss on the training
characters of the glyph benchmark (`keras_circle.data.load_glyphs`), then
retrieves among characters it never saw: MAP@R, Recall@K and
cross-typeface Recall@K of the trained embedding and of raw pixels, and a
PNG grid of queries with their nearest neighbours drawn by *other*
typefaces. The training recipe (`train_glyph_embedder`: 32 x 4 P x K
batches, Adam 1e-3, XLA, 128-d) is the one `benchmarks/compare_losses.py
--dataset glyphs` trains every loss with; the demo runs fewer steps so the
whole run fits in a few minutes on two CPU cores.
"""

import json
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_circle as kc
from keras_circle import data
from keras_circle.pipeline.models import small_cnn

P, K = 32, 4
EMBEDDING_DIM, WIDTH = 128, 32
LEARNING_RATE = 1e-3
# About 3 minutes of training on two free CPU cores (the benchmark measured
# 0.45 s a step at 48 x 48); the whole demo took 303 s of CPU time on the
# CJK set (README), so about 5 minutes there.
DEFAULT_STEPS = 400
GRID_QUERIES, GRID_NEIGHBOURS = 8, 5
QUERY_RGB, CORRECT_RGB, WRONG_RGB = (60, 110, 220), (30, 160, 60), (220, 40, 40)


def train_glyph_embedder(
    train, loss, *, labels="pair", head=None, seed=0, steps=DEFAULT_STEPS, verbose=0
):
    """Trains the benchmark's small CNN on a glyph split; returns the embedder.

    Args:
        train: the training `Glyphs` split.
        loss: a Keras loss for embeddings (`labels="pair"`) or for the
            cosines of a `CosineProxies` head (`labels="class"`).
        labels: `"pair"` or `"class"`. Defaults to `"pair"`.
        head: for pair labels, a function `embedder -> model` that trains
            behind the embedder (e.g. a `UnitNormalization`). Defaults to
            `None`.
        seed: the seed of the weights and the batches. Defaults to `0`.
        steps: 32 x 4 P x K batches. Defaults to `DEFAULT_STEPS`.
        verbose: `0` silent; `1` a Keras progress bar on a terminal and a
            line every tenth of the run elsewhere; `2` always lines.
            Defaults to `0`.

    Returns:
        The embedder, a `keras.Model` from `(size, size, 1)` images in
        `[0, 1]` to `(EMBEDDING_DIM,)` embeddings.
    """
    keras.utils.set_random_seed(seed)
    size = train.images.shape[1]
    num_classes = int(train.labels.max()) + 1
    batches = data.pk_batches(
        data.ArraySource(train.images, train.labels), p=P, k=K, seed=seed,
        preprocess=lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
        steps_per_epoch=steps,
    )  # fmt: skip
    embedder = small_cnn((size, size, 1), embedding_dim=EMBEDDING_DIM, width=WIDTH)
    model = head(embedder) if head else embedder
    if labels == "class":
        model = keras.Model(
            embedder.input, kc.CosineProxies(num_classes)(embedder.output)
        )
    model.compile(keras.optimizers.Adam(LEARNING_RATE), loss, jit_compile=True)
    bar = verbose == 1 and sys.stdout.isatty()
    callbacks = [] if bar or not verbose else [_ProgressLines(steps)]
    # The P x K stream is already in its seeded order (`shuffle` would only
    # warn that it ignores a dataset).
    model.fit(
        batches,
        epochs=1,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=1 if bar else 0,
        callbacks=callbacks,
    )
    return embedder


class _ProgressLines(keras.callbacks.Callback):
    """A plain line every tenth of the steps (logs, pipes, CI)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.every = steps, max(1, steps // 10)

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every == 0 or step == self.steps:
            loss = (logs or {}).get("loss", float("nan"))
            print(
                f"step {step}/{self.steps}  loss {float(loss):.4f}  "
                f"{time.time() - self.start:.0f} s",
                flush=True,
            )


def embed_glyphs(embedder, glyphs, batch_size=1000):
    """float32 embeddings of a split's images (scaled to `[0, 1]`)."""
    images = glyphs.images.astype(np.float32) / np.float32(255)
    return np.asarray(
        embedder.predict(images, batch_size=batch_size, verbose=0), np.float32
    )


def _neighbours(x, query, gallery, top):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    scores = x[query] @ x[gallery].T
    # Stable sort: among equal scores the lower gallery position ranks first,
    # as in keras_circle.retrieval.
    return gallery[np.argsort(-scores, axis=1, kind="stable")[:, :top]]


def retrieval_grid(embeddings, glyphs, path, *, queries=GRID_QUERIES,
                   neighbours=GRID_NEIGHBOURS, seed=0):  # fmt: skip
    """Draws queries and their nearest neighbours from the other typefaces.

    Queries are images of the query typefaces (`glyphs.query_designs`), one
    per class, classes drawn with `seed`; their neighbours come from the
    images of the other typefaces only (the cross-typeface protocol), so a
    query never meets its own design. Each row: the query (blue frame),
    then for each embedding its `neighbours` nearest, framed green when of
    the query's character and red otherwise. Ink is black on white.

    Args:
        embeddings: `{name: (n, dim) array}`, one row per image of `glyphs`,
            one block of columns per name, in order.
        glyphs: the `Glyphs` split (the unseen test classes).
        path: where to write the PNG.
        queries: rows. Defaults to `8`.
        neighbours: neighbours per embedding. Defaults to `5`.
        seed: which classes are queried. Defaults to `0`.

    Returns:
        `{"path", "queries": (rows,) positions in the split, "neighbours":
        {name: (rows, neighbours) positions}, "correct": {name: bool array},
        "boxes": {"query": [box], name: [[box]]}}`, a box being the frame's
        `(left, top, right, bottom)` pixels in the PNG.
    """
    from PIL import Image
    from PIL import ImageDraw

    query_pool, gallery = data.cross_typeface_split(
        glyphs.designs, glyphs.query_designs
    )
    rng = np.random.default_rng(seed)
    classes = np.unique(glyphs.labels[query_pool])
    chosen = rng.choice(classes, size=min(queries, len(classes)), replace=False)
    query = np.array(
        [rng.choice(query_pool[glyphs.labels[query_pool] == c]) for c in chosen]
    )
    found = {
        name: _neighbours(np.asarray(x, np.float32), query, gallery, neighbours)
        for name, x in embeddings.items()
    }
    size = glyphs.images.shape[1]
    scale = max(1, 64 // size)
    pad, frame, gap, header = 4, 3, 16, 22
    cell = size * scale + 2 * frame + 2 * pad
    columns = [("query", 0)]
    for block, name in enumerate(found):
        for j in range(neighbours):
            columns.append(
                (name, cell + gap + block * (neighbours * cell + gap) + j * cell)
            )
    width = columns[-1][1] + cell
    canvas = Image.new("RGB", (width, header + len(query) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), "query", fill="black")
    for block, name in enumerate(found):
        left = cell + gap + block * (neighbours * cell + gap)
        draw.text(
            (left + pad, 4), f"{name}: nearest from other typefaces", fill="black"
        )
    boxes = {"query": []} | {name: [] for name in found}
    correct = {name: glyphs.labels[n] == glyphs.labels[query][:, None]
               for name, n in found.items()}  # fmt: skip
    for row, q in enumerate(query):
        top = header + row * cell
        cells = [("query", q, QUERY_RGB)]
        for name, n in found.items():
            for j in range(neighbours):
                rgb = CORRECT_RGB if correct[name][row, j] else WRONG_RGB
                cells.append((name, n[row, j], rgb))
        row_boxes = {name: [] for name in found}
        for (name, index, rgb), (_, left) in zip(cells, columns, strict=True):
            box = (left + pad, top + pad, left + cell - pad - 1, top + cell - pad - 1)
            draw.rectangle(box, fill=rgb)
            ink = 255 - glyphs.images[index, ..., 0]
            glyph = Image.fromarray(ink).resize((size * scale,) * 2, Image.NEAREST)
            canvas.paste(glyph, (box[0] + frame, box[1] + frame))
            if name == "query":
                boxes["query"].append(box)
            else:
                row_boxes[name].append(box)
        for name in found:
            boxes[name].append(row_boxes[name])
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return {
        "path": str(path),
        "queries": query,
        "neighbours": found,
        "correct": correct,
        "boxes": boxes,
    }


def _check_workdir(workdir, overwrite):
    """Refuses a non-empty folder that is not an earlier glyph demo's."""
    from keras_circle.pipeline.run_folder import RunFolderError

    if overwrite or not workdir.exists() or not any(workdir.iterdir()):
        return
    report = workdir / "report.json"
    try:
        earlier = json.loads(report.read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != "glyphs":
        raise RunFolderError(
            f"{workdir} is not empty and holds no glyph demo (no report.json "
            "with dataset 'glyphs'); choose another --workdir, or pass "
            "--overwrite to write the demo's files into it."
        )


def run_glyph_demo(
    workdir="keras_circle_glyph_demo",
    *,
    steps=DEFAULT_STEPS,
    glyph_set="cjk",
    cache_dir=None,
    seed=0,
    verbose=1,
    overwrite=False,
):
    """Runs the glyph demo and returns its report.

    Builds the glyph set on first use (`keras_circle.data.ensure_glyphs`),
    trains with `CircleLoss(80, 0.4)` on the training characters, embeds
    the test characters (unseen), scores them and raw pixels with
    `keras_circle.data.glyph_metrics`, and draws `retrieval_grid`. Writes
    `report.json`, `retrieval_grid.png` and `model.keras` (the embedder)
    into `workdir`; an earlier glyph demo there is replaced.

    Args:
        workdir: Output folder. Defaults to `"keras_circle_glyph_demo"`.
        steps: 32 x 4 P x K training batches. Defaults to `DEFAULT_STEPS`.
        glyph_set: `"cjk"` (the benchmark) or `"tiny"` (matplotlib's fonts;
            for tests). Defaults to `"cjk"`.
        cache_dir: the glyph cache. Defaults to `~/.cache/keras_circle/glyphs`.
        seed: weights, batches and the grid's queries. Defaults to `0`.
        verbose: `0` silent, `1` progress (a bar on a terminal, lines
            elsewhere) and the summary, `2` lines. Defaults to `1`.
        overwrite: write into a non-empty `workdir` that holds no glyph
            demo. Defaults to `False`.

    Returns:
        The report: `results` (`circle_loss` and `raw_pixels`, each with
        `map_at_r`, `recall_at_k`, `cross_typeface_recall_at_k`),
        `recall_at_1_gain_over_pixels`, `map_at_r_gain_over_pixels`,
        `cross_typeface_recall_at_1_gain_over_pixels`, the grid, timings and
        artifacts, as written to `workdir/report.json`.

    Raises:
        ValueError: `steps` or `seed` is not a non-negative integer (`steps`
            positive), or `glyph_set` is unknown.
        keras_circle.data.glyph_fonts.MissingFontsError: the set must be
            built and its fonts are not installed (nothing is written).
        keras_circle.pipeline.run_folder.RunFolderError: `workdir` holds
            something else.
    """
    from keras_circle.data import glyph_fonts
    from keras_circle.pipeline import evaluation

    for name, value, low in (("steps", steps, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"`{name}` must be an integer >= {low}; received {value!r}."
            )
    if glyph_set not in glyph_fonts.SETS:
        raise ValueError(
            f"`glyph_set` must be one of {sorted(glyph_fonts.SETS)}; "
            f"received {glyph_set!r}."
        )
    workdir = pathlib.Path(workdir)
    _check_workdir(workdir, overwrite)
    log = print if verbose else lambda *args, **kwargs: None
    seconds = {}
    start = time.time()
    data.ensure_glyphs(glyph_set, cache_dir, verbose=bool(verbose))
    train = data.load_glyphs(glyph_set, "train", cache_dir=cache_dir)
    test = data.load_glyphs(glyph_set, "test", cache_dir=cache_dir)
    seconds["data"] = time.time() - start
    log(
        f"glyphs {glyph_set!r}: training on {len(train.code_points)} characters "
        f"({len(train.labels)} images), testing on {len(test.code_points)} "
        f"unseen ones ({len(test.labels)} images), {len(test.design_names)} "
        f"typefaces; {steps} steps of {P} x {K} batches",
        flush=True,
    )
    t = time.time()
    embedder = train_glyph_embedder(
        train, kc.CircleLoss(80.0, 0.4), seed=seed, steps=steps, verbose=verbose
    )
    seconds["train"] = time.time() - t
    log(f"embedding {len(test.labels)} test images, scoring", flush=True)
    t = time.time()
    embeddings = {
        "circle_loss": embed_glyphs(embedder, test),
        "raw_pixels": test.images.reshape(len(test.labels), -1).astype(np.float32),
    }
    results = {name: data.glyph_metrics(x, test) for name, x in embeddings.items()}
    seconds["evaluate"] = time.time() - t
    workdir.mkdir(parents=True, exist_ok=True)
    grid = retrieval_grid(embeddings, test, workdir / "retrieval_grid.png", seed=seed)
    embedder.save(workdir / "model.keras")
    seconds["total"] = time.time() - start
    ours, pixels = results["circle_loss"], results["raw_pixels"]
    report = {
        "dataset": "glyphs",
        "glyph_set": glyph_set,
        "steps": steps,
        "seed": seed,
        "recipe": f"CircleLoss(80, 0.4), {P} x {K} P x K, Adam {LEARNING_RATE}, "
        f"small CNN (width {WIDTH}, {EMBEDDING_DIM}-d), XLA",
        "num_train_classes": len(train.code_points),
        "num_test_classes": len(test.code_points),
        "typefaces": test.design_names,
        "query_typefaces": [test.design_names[j] for j in test.query_designs],
        "images_sha256": data.glyphs_info(glyph_set, cache_dir)["sha256"]["images"],
        "results": results,
        "recall_at_1_gain_over_pixels": ours["recall_at_k"]["1"]
        - pixels["recall_at_k"]["1"],
        "map_at_r_gain_over_pixels": ours["map_at_r"] - pixels["map_at_r"],
        "cross_typeface_recall_at_1_gain_over_pixels": ours[
            "cross_typeface_recall_at_k"
        ]["1"]
        - pixels["cross_typeface_recall_at_k"]["1"],
        "grid": {
            "queries": grid["queries"],
            "neighbours": grid["neighbours"],
            "correct": {n: c.mean() for n, c in grid["correct"].items()},
        },
        "seconds": seconds,
        "artifacts": {
            "retrieval_grid": grid["path"],
            "model": str(workdir / "model.keras"),
        },
    }
    report = evaluation.jsonable(report)
    report_path = evaluation.write_report(workdir, report)
    if verbose:
        print(summary(report, report_path))
    return report


def summary(report, report_path):
    """A short text table of the glyph demo's results and where its files are."""
    lines = [
        f"{report['num_test_classes']} unseen characters, "
        f"{len(report['typefaces'])} typefaces, {report['steps']} steps",
        f"{'embedding':<12} {'MAP@R':>6} {'R@1':>6} {'R@8':>6} {'cross R@1':>10}",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"{name:<12} {r['map_at_r']:6.3f} {r['recall_at_k']['1']:6.3f} "
            f"{r['recall_at_k']['8']:6.3f} "
            f"{r['cross_typeface_recall_at_k']['1']:10.3f}"
        )
    lines += [
        f"MAP@R gain over raw pixels:    {report['map_at_r_gain_over_pixels']:+.3f}",
        f"Recall@1 gain over raw pixels: {report['recall_at_1_gain_over_pixels']:+.3f}",
        "cross-typeface Recall@1 gain:  "
        f"{report['cross_typeface_recall_at_1_gain_over_pixels']:+.3f}",
        f"time: {report['seconds']['total']:.0f} s",
        f"report:      {report_path}",
        f"grid:        {report['artifacts']['retrieval_grid']}",
        f"model:       {report['artifacts']['model']}",
    ]
    return "\n".join(lines)
