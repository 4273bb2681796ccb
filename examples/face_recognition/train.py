"""Face recognition: train, evaluate and export one run.

    python examples/face_recognition/train.py [CONFIG] [--workdir DIR] [--set key=value]

The recipe (data, model, loss, protocol) is
`keras_circle.tasks.face_recognition`; the machinery it runs in (strategy,
resumable fit, report, export) is `keras_circle.pipeline`. CONFIG
defaults to `configs/face_recognition.json`.
"""

from keras_circle import pipeline
from keras_circle import tasks
from keras_circle.tasks.face_recognition import RECIPE


def train_and_evaluate(config, workdir):
    """Trains and evaluates `config` (a `keras_circle.config.Config`) in `workdir`.

    Returns:
        The report dict, also written to `workdir/report.json`.
    """
    return pipeline.train_and_evaluate(config, workdir, RECIPE)


if __name__ == "__main__":
    tasks.example_main(RECIPE)
