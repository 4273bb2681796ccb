"""What a run prints: quiet TensorFlow start-up, progress bars fit for logs.

Two decisions live here so that the command line, the pipeline and the
demo take them the same way:

- TensorFlow's C++ start-up lines (absl's "All log messages before
  absl::InitializeLog() ..." warning, oneDNN's notice, the CPU feature
  guard, and with the full `tensorflow` wheel on a machine without a GPU
  the failed `cuInit` call of device discovery) are written to file
  descriptor 2 while `tensorflow` is imported and its devices are listed,
  before `TF_CPP_MIN_LOG_LEVEL` or absl settings apply. `quiet_tensorflow()`
  imports TensorFlow with that descriptor captured, drops those known lines
  and passes every other line on, then leaves `TF_CPP_MIN_LOG_LEVEL=2` for
  the rest of the run (warnings and errors still show).
- A progress bar that redraws itself (`\\r`, `\\b`) only makes sense on a
  terminal: `progress_verbosity(1)` is Keras's `verbose=2` (one line per
  epoch) when standard output is a file or a pipe.
"""

import os
import re
import sys
import tempfile

# Start-up lines of TensorFlow's C++ runtime that say nothing about the run.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|"
    r"oneDNN custom operations are on|"
    r"cpu_feature_guard|"
    r"^To enable the following instructions:|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|"
    r"Could not find cuda drivers|"
    # The full `tensorflow` wheel on a machine without a GPU (or driver).
    r"failed call to cuInit|"
    r"TF-TRT Warning"
)


def is_terminal(stream=None):
    """True when `stream` (default `sys.stdout`) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_verbosity(verbose):
    """Keras `verbose` for `fit` and `Progbar`: bars only on a terminal.

    Args:
        verbose: `0` (silent), `1` (progress bars) or `2` (one line per
            epoch).

    Returns:
        `verbose`, except that `1` becomes `2` when standard output is not a
        terminal, so a log file gets plain lines instead of redrawn bars.
    """
    if verbose == 1 and not is_terminal():
        return 2
    return verbose


def quiet_tensorflow():
    """Imports TensorFlow without its C++ start-up lines; returns the module.

    Sets `TF_CPP_MIN_LOG_LEVEL=2` unless the environment already sets it
    (INFO lines off, warnings and errors on). Lines written to standard
    error during the import that are not known start-up noise are written
    back, so a real problem still shows. A no-op when TensorFlow is already
    imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            # Device discovery happens on first use, after the import: the
            # full `tensorflow` wheel reports a missing CUDA driver there.
            tensorflow.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
    kept = [
        line for line in text.splitlines(keepends=True)
        if not _STARTUP_NOISE.search(line)
    ]  # fmt: skip
    sys.stderr.write("".join(kept))
    sys.stderr.flush()
    return tensorflow


def _invoked_as_cli(argv):
    # `python -m keras_circle`: while Python locates the module (and so
    # imports this package), `sys.argv[0]` is "-m". The console script:
    # the path of `keras-circle`.
    return bool(argv) and (
        argv[0] == "-m" or os.path.basename(argv[0]) in ("keras-circle",)
    )


def quiet_cli_start(argv=None):
    """Imports TensorFlow quietly when this process is the `keras-circle` CLI.

    `keras_circle/__init__.py` calls it before it imports Keras (which
    imports TensorFlow on its default backend): the CLI's start-up lines
    are written by then. `--verbose` anywhere on the command line keeps
    TensorFlow's own logging as it is; so does any other program that
    imports `keras_circle`.

    Args:
        argv: The command line. Defaults to `None`: `sys.argv`.

    Returns:
        True when TensorFlow was imported quietly.
    """
    argv = sys.argv if argv is None else argv
    if not _invoked_as_cli(argv) or "--verbose" in argv[1:]:
        return False
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return False
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return False
    quiet_tensorflow()
    return True
