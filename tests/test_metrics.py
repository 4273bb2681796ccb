"""`keras_circle.metrics`: the training diagnostics against a slow NumPy loop."""

import math

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle import metrics

pytestmark = pytest.mark.backend_agnostic

PAIR_NAMES = ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"]


def reference_pair(batches, margin):
    """The four pair statistics over `batches` of `(labels, embeddings)`, by loops.

    Per anchor: its positives are the other samples of its batch with its
    label, its negatives those with another label; mean cosines of each set;
    outside when `s_n**2 + (s_p - 1)**2 > 2 m**2`. Means over valid anchors.
    """
    anchors = valid = 0
    sum_p = sum_n = outside = 0.0
    for labels, x in batches:
        x = np.asarray(x, np.float64)
        for i in range(len(labels)):
            anchors += 1
            pos, neg = [], []
            for j in range(len(labels)):
                if j == i:
                    continue
                cos = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
                (pos if labels[j] == labels[i] else neg).append(cos)
            if not pos or not neg:
                continue
            valid += 1
            s_p, s_n = sum(pos) / len(pos), sum(neg) / len(neg)
            sum_p += s_p
            sum_n += s_n
            outside += s_n**2 + (s_p - 1) ** 2 > 2 * margin**2
    if not valid:
        return [0.0, 0.0, 0.0, 0.0]
    return [valid / anchors, sum_p / valid, sum_n / valid, outside / valid]


def reference_class(batches):
    """Mean target cosine and mean hardest-negative cosine, by loops."""
    targets, hardest = [], []
    for labels, cosine in batches:
        for i, label in enumerate(labels):
            targets.append(cosine[i][label])
            others = [c for j, c in enumerate(cosine[i]) if j != label]
            hardest.append(max(others))
    return [np.mean(targets), np.mean(hardest)]


def _update(metric_list, batches, sample_weights=None):
    for index, (labels, x) in enumerate(batches):
        weight = None if sample_weights is None else sample_weights[index]
        for metric in metric_list:
            metric.update_state(labels, x, sample_weight=weight)
    return [float(keras.ops.convert_to_numpy(m.result())) for m in metric_list]


def _pair_batch(rng, batch=12, classes=4, dim=5):
    labels = rng.integers(0, classes, size=batch)
    x = rng.normal(size=(batch, dim)) + 0.8 * labels[:, None]
    return labels, x.astype("float32")


def test_circle_statistics_names():
    assert [m.name for m in metrics.circle_statistics()] == PAIR_NAMES
    assert [m.name for m in metrics.class_circle_statistics()] == [
        "mean_target_cosine",
        "mean_hardest_negative_cosine",
    ]


@pytest.mark.parametrize("margin", [0.25, 0.4])
def test_correctness_over_several_batches(rng, margin):
    """Two batches, singletons included (anchors without a positive)."""
    batches = [_pair_batch(rng), _pair_batch(rng, batch=9, classes=6)]
    got = _update(metrics.circle_statistics(margin), batches)
    expected = reference_pair(batches, margin)
    assert 0 < expected[0] < 1  # some anchors are not valid
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_outside_circle_is_the_eq8_circle():
    """Analytic: `(s_n, s_p) = (0, 1)` lies inside; `(1, 1)` lies outside.

    Samples of a class share one direction, classes are orthogonal: every
    anchor has s_p = 1, s_n = 0 (the optimum). All samples identical: s_n = 1,
    at distance 1 > sqrt(2) * 0.4 from the centre.
    """
    labels = np.array([0, 0, 1, 1])
    separated = np.array([[1, 0], [2, 0], [0, 1], [0, 3]], "float32")
    got = _update(metrics.circle_statistics(0.4), [(labels, separated)])
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 0.0], atol=1e-6)
    collapsed = np.ones((4, 2), "float32")
    got = _update(metrics.circle_statistics(0.4), [(labels, collapsed)])
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0, 1.0], atol=1e-6)


def test_no_valid_anchor_reports_zeros_not_nan(rng):
    """All labels distinct: no positive anywhere; the means read 0."""
    labels = np.arange(6)
    x = rng.normal(size=(6, 3)).astype("float32")
    got = _update(metrics.circle_statistics(), [(labels, x)])
    assert got == [0.0, 0.0, 0.0, 0.0]


def test_nan_embedding_makes_every_statistic_nan(rng):
    labels, x = _pair_batch(rng)
    x[3, 1] = np.nan
    got = _update(metrics.circle_statistics(), [(labels, x)])
    assert all(math.isnan(v) for v in got)


def test_nan_embedding_without_valid_anchor_is_still_nan(rng):
    x = rng.normal(size=(4, 3)).astype("float32")
    x[0, 0] = np.inf
    got = _update(metrics.circle_statistics(), [(np.arange(4), x)])
    assert all(math.isnan(v) for v in got)


def test_sample_weight_weighs_anchors(rng):
    """Weights 0/1 give the statistics of the weighted anchors only (their
    pairs still use the whole batch): compared with the loop over them."""
    labels, x = _pair_batch(rng, batch=10, classes=3)
    weight = (np.arange(10) % 2).astype("float32")
    got = _update(metrics.circle_statistics(), [(labels, x)], [weight])
    norm = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = norm.astype(np.float64) @ norm.T.astype(np.float64)
    rows = []
    for i in np.flatnonzero(weight):
        pos = [s[i, j] for j in range(10) if j != i and labels[j] == labels[i]]
        neg = [s[i, j] for j in range(10) if labels[j] != labels[i]]
        rows.append((bool(pos and neg), np.mean(pos or [0]), np.mean(neg or [0])))
    valid = [r for r in rows if r[0]]
    expected_valid = len(valid) / len(rows)
    assert got[0] == pytest.approx(expected_valid, abs=1e-6)
    assert got[1] == pytest.approx(np.mean([r[1] for r in valid]), abs=1e-5)
    assert got[2] == pytest.approx(np.mean([r[2] for r in valid]), abs=1e-5)


def test_reset_state_starts_over(rng):
    batches = [_pair_batch(rng), _pair_batch(rng)]
    metric_list = metrics.circle_statistics()
    _update(metric_list, batches[:1])
    for metric in metric_list:
        metric.reset_state()
    got = _update(metric_list, batches[1:])
    np.testing.assert_allclose(got, reference_pair(batches[1:], 0.4), atol=1e-5)


def test_class_statistics_correctness(rng):
    batches = []
    for batch in (8, 5):
        labels = rng.integers(0, 6, size=batch)
        batches.append((labels, np.tanh(rng.normal(size=(batch, 6))).astype("f4")))
    got = _update(metrics.class_circle_statistics(), batches)
    np.testing.assert_allclose(got, reference_class(batches), atol=1e-6)


def test_class_statistics_read_the_sampled_layout(rng):
    """Row i's target in column i; `-inf` columns are no class for that row."""
    cosine = np.tanh(rng.normal(size=(3, 5))).astype("float32")
    cosine[0, 3] = cosine[1, 4] = -np.inf
    labels = np.array([7, 2, 9])  # class ids do not index the sampled layout
    got = _update(metrics.class_circle_statistics(sampled=True), [(labels, cosine)])
    hardest = [
        max(c for j, c in enumerate(row) if j != i) for i, row in enumerate(cosine)
    ]
    np.testing.assert_allclose(
        got, [np.mean(np.diag(cosine)), np.mean(hardest)], atol=1e-6
    )


def test_class_statistics_nan_cosine_gives_nan(rng):
    cosine = np.tanh(rng.normal(size=(4, 3))).astype("float32")
    cosine[2, 0] = np.nan
    got = _update(metrics.class_circle_statistics(), [(np.arange(4) % 3, cosine)])
    assert all(math.isnan(v) for v in got)


def test_bad_margin_is_rejected():
    with pytest.raises(ValueError, match="`margin` must be a number in"):
        metrics.circle_statistics(margin=1.5)


@pytest.mark.parametrize(
    "metric",
    [
        metrics.ValidAnchors(),
        metrics.MeanPositiveSimilarity(),
        metrics.MeanNegativeSimilarity(),
        metrics.OutsideCircle(margin=0.25),
        metrics.MeanTargetCosine(sampled=True),
        metrics.MeanHardestNegativeCosine(),
    ],
)
def test_config(metric):
    clone = type(metric).from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    assert clone.name == metric.name


def test_fit_logs_the_statistics_and_a_saved_model_reloads(rng, tmp_path, capsys):
    """Plain `compile(metrics=...)`: progress bar and History; the saved
    `.keras` file reloads with its metrics, no `custom_objects`."""
    labels = np.tile(np.arange(4), 8)
    x = (rng.normal(size=(32, 6)) + labels[:, None]).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    model.compile(
        optimizer="adam",
        loss=keras_circle.CircleLoss(margin=0.25),
        metrics=keras_circle.metrics.circle_statistics(margin=0.25),
    )
    history = model.fit(x, labels, batch_size=16, epochs=1, shuffle=False, verbose=2)
    out = capsys.readouterr().out
    for name in PAIR_NAMES:
        assert f"{name}:" in out
        assert name in history.history
    assert history.history["valid_anchors"] == [1.0]  # 4 x 4 per batch
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    evaluated = loaded.evaluate(x, labels, batch_size=32, verbose=0, return_dict=True)
    embeddings = model.predict(x, verbose=0)
    expected = reference_pair([(labels, embeddings)], 0.25)
    got = [evaluated[name] for name in PAIR_NAMES]
    np.testing.assert_allclose(got, expected, atol=1e-5)
