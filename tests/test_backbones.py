"""keras_circle.backbones: ImageNet weights, input conventions, keras-hub presets.

Nothing here downloads: the Keras cache is a temporary folder (`KERAS_HOME`),
the network is cut by patching the resolver (or with `unshare -n`), and the
"present weights" file is a randomly initialised model of the same
architecture, saved as Keras saves ImageNet weights (legacy HDF5).
"""

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_circle import backbones
from keras_circle import cli
from keras_circle import config as config_lib
from keras_circle import tasks
from keras_circle.export.graph import ServingGraph
from keras_circle.pipeline import models

ROOT = Path(__file__).resolve().parents[1]
RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _config(**model):
    model.setdefault("backbone", "resnet50")
    return config_lib.from_dict(
        {
            "data": {
                "image_size": [32, 32],
                "channels": 3,
                "p": 2,
                "k": 2,
                "max_train_images": 64,
                "max_test_images": 16,
            },
            "model": {"embedding_dim": 8, **model},
            "train": {
                "epochs": 1,
                "steps_per_epoch": 2,
                "replicas": 1,
                "verbose": 0,
                "tensorboard": False,
            },
            "eval": {
                "ks": [1],
                "plots": False,
                "export_saved_model": False,
                "export_onnx": False,
            },
        }
    )


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def offline(monkeypatch):
    """No name resolves: every download fails at once, as on a cut network."""

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "network cut by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if a recipe loads data."""

    def load_data(config):
        raise AssertionError("data were loaded")

    for module in (
        tasks.face_recognition,
        tasks.person_reid,
        tasks.fine_grained_retrieval,
    ):
        recipe = dataclasses.replace(module.RECIPE, load_data=load_data)
        monkeypatch.setattr(module, "RECIPE", recipe)


def test_offline_imagenet_run_stops_before_data_naming_the_file(
    keras_home, offline, no_data, tmp_path
):
    with pytest.raises(backbones.WeightsUnavailableError) as info:
        tasks.train_and_evaluate(_config(weights="imagenet"), tmp_path / "run")
    message = str(info.value)
    assert RESNET50_FILE in message
    assert str(keras_home / "models" / RESNET50_FILE) in message
    assert "`model.weights` 'imagenet'" in message
    assert not (tmp_path / "run").exists()


def test_cli_offline_imagenet_is_one_message_exit_2(keras_home, offline, capsys):
    status = cli.main(
        [
            "train",
            str(ROOT / "configs/small/fine_grained_retrieval.json"),
            "--workdir",
            str(keras_home.parent / "run"),
            "--set",
            "model.backbone=resnet50",
            "--set",
            "model.weights=imagenet",
            "--set",
            "data.image_size=[32, 32]",
            "--set",
            "data.channels=3",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and RESNET50_FILE in err
    assert err.startswith("keras-circle train: error: `model.weights` 'imagenet'")


def test_download_times_out_instead_of_hanging(keras_home, monkeypatch):
    """A server that accepts and never answers: the fetch fails after the timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    app = dataclasses.replace(
        backbones.APPLICATIONS["resnet50"],
        weights_url=f"http://127.0.0.1:{port}/{RESNET50_FILE}",
    )
    monkeypatch.setitem(backbones.APPLICATIONS, "resnet50", app)
    start = time.monotonic()
    try:
        with pytest.raises(backbones.WeightsUnavailableError, match="timed out"):
            backbones.fetch_imagenet_weights("resnet50", timeout=0.5)
    finally:
        server.close()
    assert time.monotonic() - start < 10
    assert socket.getdefaulttimeout() is None
    assert backbones.DOWNLOAD_TIMEOUT == 20.0


def _unshare_works():
    try:
        return subprocess.run(["unshare", "-rn", "true"], timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(
    not shutil.which("unshare") or not _unshare_works(),
    reason="unshare -rn (a user and network namespace) is not permitted here",
)
def test_cli_with_the_network_cut_names_the_weights_file(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [
        *("unshare", "-rn", sys.executable, "-m", "keras_circle", "train"),
        str(ROOT / "configs/person_reid.json"),
        *("--workdir", str(tmp_path / "run")),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert RESNET50_FILE in done.stderr and "Traceback" not in done.stderr
    assert str(tmp_path / "cache" / "models" / RESNET50_FILE) in done.stderr


def test_imagenet_file_names_are_the_ones_keras_looks_for(keras_home, offline):
    """keras.applications itself, offline, names the URL it wanted."""
    if os.path.exists(os.path.expanduser(f"~/.keras/models/{RESNET50_FILE}")):
        pytest.skip("real ImageNet weights are cached in ~/.keras")
    with pytest.raises(Exception, match="URL fetch failure") as info:
        keras.applications.ResNet50(
            include_top=False, weights="imagenet", input_shape=(32, 32, 3)
        )
    assert backbones.APPLICATIONS["resnet50"].weights_url in str(info.value)


def test_present_weights_file_is_loaded_without_download(keras_home, offline):
    original = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    (keras_home / "models").mkdir(parents=True)
    # The legacy HDF5 layout of Keras's own ImageNet files.
    original.save(keras_home / "models" / RESNET50_FILE)
    embedder = models.build_embedder(_config(weights="imagenet"))
    loaded = embedder.get_layer(original.name)
    for want, got in zip(original.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(want.numpy(), got.numpy())


def test_missing_local_weights_file_stops_before_data(no_data, tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(config_lib.ConfigError, match="`model.weights` .*no such file"):
        tasks.train_and_evaluate(_config(weights=missing), tmp_path / "run")


def test_local_weights_file_is_loaded(tmp_path):
    config = _config(backbone="small_cnn")
    saved = models.build_embedder(config)
    path = str(tmp_path / "small.weights.h5")
    saved.save_weights(path)
    keras.utils.set_random_seed(7)
    config = _config(backbone="small_cnn", weights=path)
    loaded = models.build_embedder(config)
    for want, got in zip(saved.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(want.numpy(), got.numpy())


def test_truncated_weights_file_is_a_config_error(tmp_path):
    path = tmp_path / "cut.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    config = _config(weights=str(path))
    with pytest.raises(config_lib.ConfigError, match="not a readable HDF5"):
        models.prepare_backbone(config)


@pytest.mark.parametrize(
    ("backbone", "size", "smallest"),
    [("resnet50", 31, 32), ("inception_v3", 64, 75), ("efficientnet_b0", 16, 32)],
)
def test_image_smaller_than_the_backbone_takes_is_a_config_error(
    backbone, size, smallest
):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.from_dict(
            {"model": {"backbone": backbone}, "data": {"image_size": [size, 128]}}
        )
    message = str(info.value)
    assert f"`data.image_size[0]` must be >= {smallest}" in message
    assert repr(backbone) in message and f"[{size}, 128]" in message


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        ({"backbone": "resnet5"}, {}, "`model.backbone` must be one of"),
        ({"backbone": "small_cnn", "weights": "imagenet"}, {}, "small_cnn"),
        ({"weights": "imagenet"}, {"channels": 1}, "`data.channels` to 3"),
        ({"backbone": "hub:x", "weights": "imagenet"}, {}, "must be null"),
        ({"backbone": "hub:"}, {}, "preset name or folder"),
    ],
)
def test_bad_backbone_and_weights_are_config_errors(model, data, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.from_dict({"model": model, "data": data})


def test_paper_configs_start_from_imagenet_weights():
    for name in ("face_recognition", "person_reid", "fine_grained_retrieval"):
        config = config_lib.load_config(ROOT / "configs" / f"{name}.json")
        assert config.model.weights == "imagenet", name


def _pixels(size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    ("backbone", "size", "keras_preprocess"),
    [
        ("resnet50", 32, keras.applications.resnet.preprocess_input),
        ("inception_v3", 75, keras.applications.inception_v3.preprocess_input),
        ("efficientnet_b0", 32, keras.applications.efficientnet.preprocess_input),
    ],
)
def test_pipeline_preprocesses_as_keras_applications(backbone, size, keras_preprocess):
    """Training and test-time paths of the recipe equal Keras's preprocess_input."""
    config = config_lib.from_dict(
        {
            "model": {"backbone": backbone, "weights": "imagenet"},
            "data": {"image_size": [size, size], "max_test_images": 4},
        }
    )
    task_data = tasks.recipe_for(config).load_data(config)
    pixels = _pixels((size, size))
    want = keras_preprocess(pixels.astype("float32"))
    for preprocess in (task_data.preprocess_test, task_data.preprocess_train):
        got, _ = preprocess(tf.constant(pixels), 0)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    assert task_data.preprocessing["normalization"] != "imagenet"


def test_export_serves_the_backbone_convention(tmp_path):
    """`serving_bytes` of the run's spec = the embedder on Keras's preprocess_input."""
    config = _config(weights=None)
    task_data = tasks.recipe_for(config).load_data(config)
    assert task_data.preprocessing["normalization"] == "caffe"
    inputs = keras.Input((32, 32, 3))
    probe = keras.Model(inputs, keras.layers.Flatten()(inputs), name="probe")
    graph = ServingGraph(probe, None, task_data.preprocessing)
    pixels = _pixels((32, 32), seed=1)
    served = graph.serve_bytes(tf.constant([tf.io.encode_png(pixels).numpy()]))
    want = keras.applications.resnet.preprocess_input(pixels.astype("float32"))
    want = want.reshape(-1) / np.linalg.norm(want)
    np.testing.assert_allclose(served["embedding"][0], want, atol=1e-6)


@pytest.fixture
def hub_preset(tmp_path):
    """A tiny keras-hub ResNet saved as a preset folder, with its converter."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(None, None, 3),
    )
    folder = tmp_path / "tiny_resnet"
    backbone.save_to_preset(str(folder))
    # torchvision-style ImageNet mean and std, as scale and offset.
    std, mean = np.array([0.229, 0.224, 0.225]), np.array([0.485, 0.456, 0.406])
    converter = keras_hub.layers.ResNetImageConverter(
        scale=list(1 / (255 * std)), offset=list(-mean / std)
    )
    converter.save_to_preset(str(folder))
    return folder


def test_hub_preset_folder_trains_through_the_pipeline(hub_preset, tmp_path):
    config = _config(backbone=f"hub:{hub_preset}")
    # The SavedModel export checks that it serves what Keras computes.
    config.eval.export_saved_model = True
    task_data = tasks.recipe_for(config).load_data(config)
    assert task_data.preprocessing["normalization"] == "none"
    report = tasks.train_and_evaluate(config, tmp_path / "run")
    assert report["steps"] == 2 and "saved_model" in report["artifacts"]
    # Pair labels: the saved model is the embedder; it loads back.
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    layer = model.get_layer("hub_backbone").get_layer("hub_rescaling")
    # The converter's convention is applied inside: 255 -> (1 - mean) / std.
    out = np.asarray(layer(np.full((1, 1, 1, 3), 255.0, "float32")))[0, 0, 0]
    want = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, want, rtol=1e-5)


def test_missing_hub_preset_folder_stops_before_data(no_data, tmp_path):
    pytest.importorskip("keras_hub")
    config = _config(backbone=f"hub:{tmp_path / 'absent'}")
    with pytest.raises(config_lib.ConfigError, match="not a keras-hub preset folder"):
        tasks.train_and_evaluate(config, tmp_path / "run")


def test_hub_needs_keras_hub_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(config_lib.ConfigError, match=r"keras-circle\[hub\]"):
        backbones.check_hub_preset("hub:resnet_50_imagenet")
