"""Tests of how exports are published: modes, versions, staging, atomicity."""

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import keras
import pytest

from keras_circle import export
from keras_circle.export import publish

SHAPE = (8, 8, 3)
DIM = 4
FAST = dict(progress=False, verify_batch_size=2)
PUBLISH_PY = Path(publish.__file__)


def make_embedder(dim=DIM, shape=SHAPE):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(dim)(x))


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(top):
    """{relative path: permission bits} of `top` and everything under it."""
    found = {".": stat.S_IMODE(os.stat(top).st_mode)}
    for root, folders, files in os.walk(top):
        for name in folders + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, top)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


# 002: TensorFlow makes its folders 0755 whatever the umask; they are fixed.
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], indirect=True, ids=oct)
def test_published_saved_model_modes_follow_umask(umask, tmp_path):
    version = export.export_saved_model(make_embedder(), tmp_path / "base", **FAST)
    found = modes(version)
    assert export.METADATA_PATH in found and "saved_model.pb" in found
    want = {
        path: (0o777 if os.path.isdir(os.path.join(version, path)) else 0o666) & ~umask
        for path in found
    }
    assert {p: oct(m) for p, m in found.items()} == {p: oct(m) for p, m in want.items()}


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True, ids=oct)
def test_published_onnx_mode_follows_umask(umask, tmp_path):
    path = export.export_onnx(make_embedder(), tmp_path / "e.onnx", **FAST)
    assert oct(stat.S_IMODE(os.stat(path).st_mode)) == oct(0o666 & ~umask)


def test_concurrent_exports_get_distinct_versions(tmp_path, monkeypatch):
    """Both exports stage before either publishes; each gets its own version."""
    base = tmp_path / "base"
    both_staged = threading.Barrier(2, timeout=120)
    original = publish.Staging.publish_version

    def publish_after_both_staged(self, *args, **kwargs):
        both_staged.wait()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(publish.Staging, "publish_version", publish_after_both_staged)
    models = [make_embedder(), make_embedder()]
    results, errors = [], []

    def run(model):
        try:
            results.append(export.export_saved_model(model, base, **FAST))
        except BaseException as error:  # reported below
            errors.append(error)
            both_staged.abort()

    threads = [threading.Thread(target=run, args=(m,)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert errors == []
    assert sorted(results) == [str(base / "1"), str(base / "2")]
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging folder left


def test_version_taken_after_numbering_is_skipped(tmp_path, monkeypatch):
    """Another export published the number this one chose: take the next."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").touch()
    monkeypatch.setattr(publish, "next_version", lambda base_dir: 1)
    with publish.Staging(tmp_path) as staging:
        assert staging.publish_version(tmp_path) == str(tmp_path / "2")
    with publish.Staging(tmp_path) as staging:
        with pytest.raises(FileExistsError, match="Version 2 already exists"):
            staging.publish_version(tmp_path, 2)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def _start_owner(parent):
    """A process that stages in `parent` the way an export does, then waits."""
    script = (
        "import importlib.util, os, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('p', {str(PUBLISH_PY)!r})\n"
        "publish = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(publish)\n"
        f"staging = publish.Staging({str(parent)!r})\n"
        "open(os.path.join(staging.path, 'saved_model.pb'), 'w').close()\n"
        "print(staging.path, flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline().strip()


def test_stale_staging_dir_of_dead_process_is_removed(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    owner, staging = _start_owner(base)
    owner.kill()  # an export killed while writing
    owner.wait(timeout=30)
    owner.stdout.close()
    assert os.path.isdir(staging)
    export.export_saved_model(make_embedder(), base, **FAST)
    assert sorted(os.listdir(base)) == ["1"]


def test_live_staging_dir_is_kept(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    owner, staging = _start_owner(base)
    try:
        export.export_saved_model(make_embedder(), base, **FAST)
        assert os.path.isfile(os.path.join(staging, "saved_model.pb"))
        assert sorted(os.listdir(base)) == sorted(["1", os.path.basename(staging)])
        # TF Serving loads all-digit folder names only.
        assert not os.path.basename(staging).isdigit()
    finally:
        owner.kill()
        owner.wait(timeout=30)
        owner.stdout.close()


def test_recycled_pid_does_not_keep_a_stale_staging_dir(tmp_path):
    """An entry naming a live pid with another start time is a dead export's."""
    base = tmp_path / "base"
    (base / f"{publish.STAGING_PREFIX}{os.getpid()}-1-abcd").mkdir(parents=True)
    if publish.process_start_time(os.getpid()) is None:
        pytest.skip("no /proc: start times are unknown")
    assert publish.remove_stale_staging(base) == [
        str(base / f"{publish.STAGING_PREFIX}{os.getpid()}-1-abcd")
    ]


def test_failed_publish_leaves_previous_versions(tmp_path, monkeypatch):
    base = tmp_path / "base"
    export.export_saved_model(make_embedder(), base, **FAST)
    before = modes(base)

    def fail(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError, match="injected"):
        export.export_saved_model(make_embedder(), base, **FAST)
    assert modes(base) == before
    assert sorted(os.listdir(base)) == ["1"]
