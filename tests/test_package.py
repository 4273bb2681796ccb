"""What the package promises about its installation: requirements, extras, data.

`.ci/run` also builds the wheel and smoke-tests it in a fresh environment;
these tests catch the same mistakes earlier and without a build.
"""

import ast
import fnmatch
import os
import pathlib
import re
import runpy
import subprocess
import sys
from unittest import mock

import pytest
import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_circle"


def _setup_kwargs():
    with mock.patch.object(setuptools, "setup") as setup:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return setup.call_args.kwargs


SETUP = _setup_kwargs()


def _names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_base_install_requires_no_tensorflow():
    """A machine with `tensorflow` (GPU) must not get `tensorflow-cpu` beside it."""
    names = _names(SETUP["install_requires"])
    assert not {n for n in names if n.startswith("tensor")}, names


def test_all_extra_holds_every_optional_part_but_bench_jax_dev_cpu():
    extras = SETUP["extras_require"]
    parts = set().union(
        *(
            _names(extras[e])
            for e in ("tensorflow", "hub", "onnx", "tfds", "clustering")
        )
    )
    assert _names(extras["all"]) == parts


def test_only_the_cpu_extra_names_tensorflow_cpu():
    """Both wheels install the one `tensorflow` module: never both at once.

    keras-hub needs tensorflow-text, which needs `tensorflow`; so `hub` and
    `all` name `tensorflow` (GPU on Linux), and `cpu` stands alone.
    """
    extras = SETUP["extras_require"]
    assert _names(extras["tensorflow"]) == {"tensorflow", "tensorboard"}
    assert _names(extras["cpu"]) == {"tensorflow-cpu", "tensorboard"}
    assert _names(extras["hub"]) == {"keras-hub", "tensorflow"}
    with_cpu = {e for e, reqs in extras.items() if "tensorflow-cpu" in _names(reqs)}
    assert with_cpu == {"cpu"}


def test_every_requirement_but_bench_is_pinned_in_constraints():
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    extras = SETUP["extras_require"]
    wanted = _names(SETUP["install_requires"]).union(
        *(_names(r) for e, r in extras.items() if e != "bench")
    )
    assert {n.replace("_", "-") for n in wanted} <= pinned


def test_every_data_file_is_package_data():
    patterns = SETUP["package_data"]["keras_circle"]
    files = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert "data/fashion_mnist_subset.npz" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in patterns)]
    assert not missing, f"not in setup.py package_data: {missing}"


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path):
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _first_line(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def _says_tensorflow_only(line):
    return "TensorFlow-only" in line or "TensorFlow only" in line


def test_modules_that_import_tensorflow_say_so_in_their_first_line():
    """The README's rule for the `[tensorflow]` extra holds for every module.

    A module needs TensorFlow when it, a keras_circle module it imports at
    the top, or its package imports `tensorflow` at the top. Its first
    docstring line, or its package's, says "TensorFlow only".
    """
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    imports = {name: _top_level_imports(p) for name, p in paths.items()}

    def needs_tf(name, seen=()):
        if name in seen:
            return False
        package = name.rpartition(".")[0]
        parents = [package] if package in paths and package != name else []
        for other in sorted(imports[name]) + parents:
            if other.split(".")[0] == "tensorflow":
                return True
            if other in paths and needs_tf(other, (*seen, name)):
                return True
        return False

    undocumented = []
    for name, path in sorted(paths.items()):
        package = name.rpartition(".")[0]
        lines = [_first_line(path)]
        if package in paths:
            lines.append(_first_line(paths[package]))
        if needs_tf(name) and not any(_says_tensorflow_only(x) for x in lines):
            undocumented.append(name)
    assert not undocumented, undocumented


def test_base_modules_import_without_tensorflow():
    """What the base install offers runs on JAX without TensorFlow imported."""
    pytest.importorskip("jax")
    code = (
        "import sys\n"
        "import keras_circle, keras_circle.losses, keras_circle.similarity\n"
        "import keras_circle.retrieval, keras_circle.search, keras_circle.plots\n"
        "import keras_circle.callbacks, keras_circle.config, keras_circle.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
