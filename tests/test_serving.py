"""Tests of `serving/`: REST client against a fake TF Serving, ONNX example, CLI."""

import base64
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_circle import cli
from keras_circle import cli_export
from keras_circle import export
from keras_circle.layers import CosineProxies

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (28, 28, 1)
DIM = 8


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "serving" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rest_client = _load_script("rest_client")
onnx_inference = _load_script("onnx_inference")


def make_trainer():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embedder = keras.Model(inputs, keras.layers.Dense(DIM)(x), name="embedder")
    return keras.Model(inputs, CosineProxies(3)(embedder(inputs)))


class _FakeTFServing(http.server.BaseHTTPRequestHandler):
    """TF Serving's predict endpoint, backed by the exported SavedModels."""

    base_dir = None
    requests = []
    _loaded = {}
    _path = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")

    def log_message(self, *args):
        pass

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        match = self._path.match(self.path)
        if not match or match.group(1) != "circle_embedder":
            return self._answer(404, {"error": f"Servable not found: {self.path}"})
        version = match.group(2) or str(export.next_version(self.base_dir) - 1)
        try:
            if version not in self._loaded:
                self._loaded[version] = tf.saved_model.load(
                    os.path.join(self.base_dir, version)
                )
            signature = self._loaded[version].signatures[
                body.get("signature_name", "serving_default")
            ]
            (name, spec) = next(iter(signature.structured_input_signature[1].items()))
            row = "instances" in body
            values = body["instances"] if row else body["inputs"]
            if isinstance(values, dict):
                values = values[name]
            values = [
                v[name] if isinstance(v, dict) and name in v else v for v in values
            ]
            values = [
                base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values
            ]
            out = signature(**{name: tf.constant(values, dtype=spec.dtype)})
            (result,) = out.values()
            key = "predictions" if row else "outputs"
            return self._answer(200, {key: result.numpy().tolist()})
        except Exception as error:  # TF Serving answers 400 with the message.
            return self._answer(400, {"error": " ".join(str(error).split())})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    trainer = make_trainer()
    trainer.save(root / "trainer.keras")
    base = root / "circle_embedder"
    export.export_saved_model(trainer, base, progress=False)
    export.export_saved_model(trainer, base, progress=False)
    onnx_path = export.export_onnx(trainer, root / "embedder.onnx", progress=False)
    _FakeTFServing.base_dir = str(base)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeTFServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pixels = np.random.default_rng(0).integers(0, 256, (3, *SHAPE), dtype=np.uint8)
    files = []
    for i, p in enumerate(pixels):
        files.append(root / f"img{i}.png")
        Image.fromarray(p[..., 0]).save(files[-1])
    yield {
        "url": f"http://127.0.0.1:{server.server_address[1]}",
        "base": base,
        "onnx": onnx_path,
        "embedder": trainer.layers[1],
        "keras_file": root / "trainer.keras",
        "pixels": pixels,
        "files": files,
        "root": root,
    }
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def keras_reference(embedder, x):
    y = np.asarray(embedder(x, training=False), dtype="float64")
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def test_request_bodies_follow_tf_serving():
    client = rest_client.PredictClient("http://host:8501/", "circle_embedder")
    assert client.path == "/v1/models/circle_embedder:predict"
    assert rest_client.PredictClient(version=2).path == (
        "/v1/models/circle_embedder/versions/2:predict"
    )
    x = np.zeros((2, 1, 1, 1), "float32")
    assert client.request_body(x) == {
        "signature_name": "serving_default",
        "instances": [[[[0.0]]], [[[0.0]]]],
    }
    assert client.request_body(x, format="inputs") == {
        "signature_name": "serving_default",
        "inputs": {"image": [[[[0.0]]], [[[0.0]]]]},
    }
    assert client.request_body(image_bytes=[b"\x89PNG"], format="inputs") == {
        "signature_name": "serving_bytes",
        "inputs": {"image_bytes": [{"b64": "iVBORw=="}]},
    }
    assert client.request_body(image_bytes=[b"\x89PNG"])["instances"] == [
        {"b64": "iVBORw=="}
    ]
    with pytest.raises(ValueError, match="exactly one"):
        client.request_body()
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\)"):
        client.request_body(np.zeros((28, 28, 1)))
    with pytest.raises(ValueError, match="'instances' or 'inputs'"):
        client.request_body(x, format="rows")


@pytest.mark.parametrize("format", ["instances", "inputs"])
def test_predict_matches_keras(served, format):
    x = served["pixels"].astype("float32") / 255.0
    client = rest_client.PredictClient(served["url"], "circle_embedder", version=1)
    embeddings = client.predict(x, format=format)
    path, body = _FakeTFServing.requests[-1]
    assert path == "/v1/models/circle_embedder/versions/1:predict"
    assert format in body
    assert embeddings.shape == (3, DIM)
    want = keras_reference(served["embedder"], x)
    np.testing.assert_allclose(embeddings, want, atol=1e-5)


def test_predict_image_bytes(served):
    client = rest_client.PredictClient(served["url"])
    encoded = [f.read_bytes() for f in served["files"]]
    embeddings = client.predict(image_bytes=encoded, format="inputs")
    assert _FakeTFServing.requests[-1][0] == "/v1/models/circle_embedder:predict"
    want = keras_reference(served["embedder"], served["pixels"] / 255.0)
    np.testing.assert_allclose(embeddings, want, atol=1e-5)


def test_rest_client_main(served, capsys):
    files = [str(f) for f in served["files"]]
    assert rest_client.main(["--url", served["url"], *files]) == 0
    assert f"3 embeddings of size {DIM}" in capsys.readouterr().out


def test_wrong_image_shape_is_a_clear_error(served):
    client = rest_client.PredictClient(served["url"])
    with pytest.raises(rest_client.PredictError, match=r"HTTP 400.*\[\?,28,28,1\]"):
        client.predict(np.zeros((1, 32, 32, 1), "float32"))
    with pytest.raises(rest_client.PredictError, match="HTTP 404"):
        rest_client.PredictClient(served["url"], "nope").predict(
            np.zeros((1, 28, 28, 1))
        )
    with pytest.raises(rest_client.PredictError, match="Cannot reach"):
        rest_client.PredictClient("http://127.0.0.1:9", timeout=5).predict(
            np.zeros((1, 28, 28, 1))
        )


def test_onnx_inference_example(served, capsys):
    embedder = onnx_inference.OnnxEmbedder(served["onnx"])
    assert embedder.metadata["embedding_size"] == DIM
    got = embedder.embed_files(served["files"])
    want = keras_reference(served["embedder"], served["pixels"] / 255.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"Wrong image shape \(1, 32, 32, 1\)"):
        embedder.embed(np.zeros((1, 32, 32, 1)))
    files = [str(f) for f in served["files"]]
    assert onnx_inference.main([served["onnx"], *files]) == 0
    assert "cosine similarities" in capsys.readouterr().out


def test_cli_export_in_process(served, capsys):
    out = served["root"] / "cli"
    code = cli.main(
        [
            "export",
            str(served["keras_file"]),
            "--base-dir",
            str(out),
            "--onnx",
            str(out / "e.onnx"),
            "--scale",
            "minus_one_to_one",
            "--no-progress",
        ]
    )
    assert code == 0
    printed, err = capsys.readouterr()
    assert f"SavedModel: {out / '1'}" in printed and "ONNX:" in printed
    assert "--scale is deprecated; use --normalization symmetric" in err
    meta = json.loads((out / "1" / export.METADATA_PATH).read_text())
    # The CLI's old scale name maps to the shared normalization vocabulary.
    assert meta["preprocessing"]["normalization"] == "symmetric"
    # Errors are one line on stderr and a non-zero status, not a traceback.
    assert cli.main(["export", str(served["keras_file"])]) == 2
    not_a_dir = served["root"] / "file"
    not_a_dir.write_text("x")
    args = ["export", str(served["keras_file"]), "--base-dir", str(not_a_dir)]
    assert cli.main(args + ["--no-progress"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_python_m_keras_circle_export(served):
    """The documented command, as a user runs it (also the console script's code)."""
    out = served["root"] / "module"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Both at once: each spends most of its time importing TensorFlow.
    export_run = subprocess.Popen(
        [sys.executable, str(ROOT / "serving" / "export.py")]
        + [str(served["keras_file"]), "--base-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    help_run = subprocess.Popen(
        [sys.executable, "-m", "keras_circle", "export", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    help_text, _ = help_run.communicate(timeout=120)
    _, stderr = export_run.communicate(timeout=180)
    assert export_run.returncode == 0, stderr[-2000:]
    assert (out / "1" / "saved_model.pb").is_file()
    assert "verify" in stderr  # the progress bar names the steps
    assert help_run.returncode == 0 and "--base-dir" in help_text


def test_cli_export_runs_under_the_jax_backend(served):
    """Export is TensorFlow work: the CLI re-runs itself under TensorFlow."""
    out = served["root"] / "from_jax"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_CIRCLE_EXPORT_REEXEC", None)
    result = subprocess.run(
        [sys.executable, "-m", "keras_circle", "export", str(served["keras_file"])]
        + ["--base-dir", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Keras backend is 'jax'; exporting in a TensorFlow subprocess" in (
        result.stderr
    )
    assert f"SavedModel: {out / '1'}" in result.stdout
    assert (out / "1" / "saved_model.pb").is_file()


def test_cli_export_refuses_shape_change_without_flag(served, tmp_path, capsys):
    inputs = keras.Input(SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(DIM + 1)(x)).save(tmp_path / "wide.keras")
    base = tmp_path / "base"
    shutil.copytree(served["base"] / "1", base / "1")
    args = ["export", str(tmp_path / "wide.keras"), "--base-dir", str(base)]
    assert cli.main(args + ["--no-progress"]) == 1
    assert "--allow-shape-change" in capsys.readouterr().err
    assert os.listdir(base) == ["1"]
    assert cli.main(args + ["--no-progress", "--allow-shape-change"]) == 0
    assert f"SavedModel: {base / '2'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--onnx", "{tmp}/e.onnx", "--opset", "0"], "`opset` must be from 13 to 18"),
        (["--base-dir", "{tmp}/b", "--version", "0"], "`version` must be from 1"),
        (["--base-dir", "{tmp}/b", "--atol", "nan"], "`atol` must be finite"),
    ],
)
def test_cli_export_rejects_bad_values(served, tmp_path, capsys, flags, message):
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    code = cli.main(["export", str(served["keras_file"]), *flags, "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_export_argv_round_trips():
    """What the CLI re-runs under TensorFlow is the command it was given."""
    parser = cli.build_parser()
    argv = [
        "export",
        "a model.keras",
        "--base-dir",
        "b",
        "--version",
        "3",
        "--onnx",
        "e.onnx",
        "--opset",
        "13",
        "--embedding-layer",
        "emb",
        "--size",
        "20",
        "24",
        "--normalization",
        "caffe",
        "--center-crop",
        "40",
        "--gallery",
        "index dir",
        "--top-k",
        "7",
        "--atol",
        "1e-07",
        "--allow-shape-change",
        "--no-progress",
    ]
    first = parser.parse_args(argv)
    again = parser.parse_args(cli_export.export_argv(first))
    assert vars(again) == vars(first)
    first.model = "-odd.keras"  # not to be read as an option
    assert parser.parse_args(cli_export.export_argv(first)).model == os.path.join(
        ".", "-odd.keras"
    )
    old = parser.parse_args(["export", "m.keras", "--scale", "minus_one_to_one"])
    assert vars(parser.parse_args(cli_export.export_argv(old))) == vars(old)
    bare = parser.parse_args(["export", "m.keras", "--onnx", "e.onnx"])
    assert vars(parser.parse_args(cli_export.export_argv(bare))) == vars(bare)


def test_models_config_points_at_the_model():
    config = (ROOT / "serving" / "models.config").read_text()
    assert 'name: "circle_embedder"' in config
    assert 'base_path: "/models/circle_embedder"' in config
    assert 'model_platform: "tensorflow"' in config
    readme = (ROOT / "serving" / "README.md").read_text()
    assert "docker run" in readme and "tensorflow-model-server" in readme
    assert "--model_config_file" in readme
