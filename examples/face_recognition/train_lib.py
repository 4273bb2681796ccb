"""face recognition: `train_and_evaluate(config, workdir)` for this task family.

The machinery (strategy, P x K batches, resumable fit, protocol, report,
plots, export) is shared in `keras_circle.pipeline`; this example pins the
task family so that a config of another family fails early.
"""

from keras_circle import pipeline

TASK = "face_recognition"


def train_and_evaluate(config, workdir):
    """Trains and evaluates `config` (a `keras_circle.config.Config`) in `workdir`.

    Returns:
        The report dict, also written to `workdir/report.json`.
    """
    if config.task != TASK:
        raise ValueError(
            f"This example runs task {TASK!r}; the config says {config.task!r}."
        )
    return pipeline.train_and_evaluate(config, workdir)
