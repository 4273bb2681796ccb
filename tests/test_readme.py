"""Every command that README.md shows is run, here or by CI.

The quick start's demo command runs as written. The test commands
(`python -m pytest`, and the backend-agnostic tests under the JAX and
PyTorch backends) are what `.ci/run` runs after installing; this test checks
the two stay identical instead of starting the suite inside itself. Other `bash` blocks run as written, with
the benchmark scripts given small sizes (`QUICK_ARGS`, appended to the
command: argparse takes the last value) so that CI stays within its budget.
The glyph demo (`keras-circle demo --dataset glyphs`) runs on the tiny glyph
set with 3 steps (`GLYPH_DEMO_QUICK_ARGS`): CI has no CJK font packages, and
the tiny set (matplotlib's own fonts) is built on first use in a temporary
cache, as the CJK set would be.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
TEST_COMMANDS = (
    "python -m pytest",
    "KERAS_BACKEND=jax python -m pytest -m backend_agnostic",
    "KERAS_BACKEND=torch python -m pytest -m backend_agnostic",
)


def bash_commands(text):
    """Each line of each ```bash block, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [
        line.strip() for block in blocks for line in block.splitlines() if line.strip()
    ]


def quickstart():
    section = README.split("<!-- quickstart -->")[1].split("<!-- /quickstart -->")[0]
    return bash_commands(section)


QUICK_ARGS = {
    "benchmarks/accuracy.py": "--trials 1",
    "benchmarks/bench_losses.py": "--quick --repeats 1",
    "benchmarks/bench_layouts.py": "--batches 256 --block-size 64 --rounds 1",
    "benchmarks/bench_losses_jax.py": "--quick",
    "benchmarks/bench_phases.py": "--seconds 1 --batch 256 --rounds 1",
    "benchmarks/bench_profile.py": "--batch 256 --class-batch 64 --classes 2000 --rounds 1",
    "benchmarks/bench_retrieval.py": "--sizes 3000",
    "benchmarks/bench_serving.py": "--arch small --repeats 1",
    "benchmarks/compare_losses.py": "--steps 3 --seeds 0",
}


GLYPH_DEMO = "keras-circle demo --dataset glyphs"
GLYPH_DEMO_QUICK_ARGS = "--glyph-set tiny --steps 3"


def run(command, env=None, timeout=600):
    full_env = {**os.environ, **(env or {})}
    # The commands name `python`, `pip` and `keras-circle`: those of this venv.
    full_env["PATH"] = (
        f"{pathlib.Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_quickstart_has_two_commands():
    commands = quickstart()
    assert len(commands) == 2
    assert "keras-circle demo" in commands[0]
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_commands():
    ci_lines = [line.strip() for line in CI.splitlines()]
    for command in TEST_COMMANDS:
        assert command in bash_commands(README)
        assert command in ci_lines
    install = quickstart()[1].split(" && ")[0]
    assert install.replace("pip install", "python -m pip install -q") in CI


@pytest.mark.slow
def test_quickstart_demo_command():
    command = quickstart()[0]
    run(command, timeout=900)
    report = json.loads((ROOT / "runs" / "demo" / "report.json").read_text())
    results = report["results"]
    gain = (
        results["circle_loss"]["recall_at_k"]["1"]
        - results["raw_pixels"]["recall_at_k"]["1"]
    )
    assert gain >= 0.05


def inline_commands(text):
    """Commands quoted inline in the prose, such as `python benchmarks/x.py`."""
    return re.findall(r"`((?:python|keras-circle) [^`]+)`", text)


def other_commands():
    skip = set(quickstart()) | set(TEST_COMMANDS)
    commands = bash_commands(README) + inline_commands(README)
    return list(dict.fromkeys(c for c in commands if c not in skip))


@pytest.mark.slow
@pytest.mark.parametrize("command", other_commands())
def test_other_commands(command, tmp_path):
    for script, args in QUICK_ARGS.items():
        if command.startswith(f"python {script}"):
            command = f"{command} {args}"
            if script.endswith("compare_losses.py"):
                command += f" --out {tmp_path / 'compare.md'}"
            if script.endswith(
                ("bench_losses.py", "bench_phases.py", "bench_profile.py")
            ):
                command += f" --plot {tmp_path / 'bench.png'}"
    if command.startswith(GLYPH_DEMO):
        command += f" {GLYPH_DEMO_QUICK_ARGS} --cache-dir {tmp_path / 'glyphs'}"
    run(command)


def test_training_diagnostics_example_runs(tmp_path, monkeypatch):
    """The "Training diagnostics" code block, as written, in a scratch folder."""
    block = README.split("<!-- diagnostics -->")[1].split("<!-- /diagnostics -->")[0]
    code = re.findall(r"```python\n(.*?)```", block, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    history = namespace["history"].history
    assert history["valid_anchors"] == [1.0, 1.0, 1.0]
    assert history["mean_s_p"][-1] > history["mean_s_n"][-1]
    assert (tmp_path / "circle_trajectory.png").exists()
    assert len(namespace["points"]) == 3


def test_readme_shows_the_glyph_demo_and_its_font_packages():
    from keras_circle.data import glyph_fonts

    assert any(c.startswith(GLYPH_DEMO) for c in other_commands())
    lines = README.split("apt-get install -y ", 1)[1].split("\n")
    words = []
    for line in lines:
        words += line.replace("\\", " ").split()
        if not line.rstrip().endswith("\\"):
            break
    assert sorted(words) == glyph_fonts.apt_packages("cjk")
