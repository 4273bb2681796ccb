"""The person re-ID recipe's evaluation options: flip test and re-ranking."""

import keras
import numpy as np
import pytest

from keras_circle import config as config_lib
from keras_circle import retrieval
from keras_circle import tasks
from keras_circle.pipeline import evaluation


def _config(**eval_options):
    return config_lib.from_dict(
        {
            "task": "person_reid",
            "data": {"channels": 1, "image_size": [8, 6], "max_test_images": 40},
            "model": {"backbone": "small_cnn"},
            "eval": {"plots": False, "ks": [1], **eval_options},
        }
    )


def _embedder(config):
    """A linear map of the pixels: it sees left from right."""
    h, w = config.data.image_size
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((h, w, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )


def test_flip_test_embeds_the_mean_of_image_and_mirror_image():
    config = _config()
    task_data = tasks.person_reid.load_data(config)
    images = task_data.eval_sets["query"][0][:5]
    embedder = _embedder(config)
    x = np.stack([task_data.preprocess_test(image, 0)[0] for image in images])
    plain = keras.ops.convert_to_numpy(embedder(x))
    mirrored = keras.ops.convert_to_numpy(embedder(x[:, :, ::-1]))
    out = evaluation.embed(embedder, images, task_data, 2, flip=True)
    np.testing.assert_allclose(out, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    unflipped = evaluation.embed(embedder, images, task_data, 2)
    np.testing.assert_allclose(unflipped, plain, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, plain, atol=1e-3)


@pytest.mark.parametrize("flip_test", [False, True])
@pytest.mark.parametrize("rerank", [False, True])
def test_evaluate_applies_flip_test_and_rerank(flip_test, rerank):
    config = _config(flip_test=flip_test, rerank=rerank)
    task_data = tasks.person_reid.load_data(config)
    embedder = _embedder(config)
    (q_images, q_ids, q_cams), (g_images, g_ids, g_cams) = (
        task_data.eval_sets["query"],
        task_data.eval_sets["gallery"],
    )
    q = evaluation.embed(embedder, q_images, task_data, 256, flip=flip_test)
    g = evaluation.embed(embedder, g_images, task_data, 256, flip=flip_test)
    expected = retrieval.reid_metrics(
        q, q_ids, q_cams, g, g_ids, g_cams, ranks=(1,), rerank=rerank
    )
    actual = tasks.person_reid.evaluate(config, embedder, task_data, None)
    assert actual == expected
