"""What a task family's recipe hands the shared machinery (TensorFlow only).

A recipe (one module per family in `keras_circle.tasks`) says, top to
bottom, which data a run trains and evaluates on, which model and loss it
trains, and which protocol measures it; `keras_circle.pipeline.run` does the
rest (strategy, resumable fit, report, export) the same way for every
family.
"""

import dataclasses
from collections.abc import Callable

from keras_circle import data


@dataclasses.dataclass
class TaskData:
    """What a run trains and evaluates on.

    Attributes:
        source: `ArraySource` / `FileSource` / `TfdsSource` for `pk_batches`.
        num_classes: Training classes (for the proxies of class-level losses).
        preprocess_train: `(image, label) -> (image, label)` with augmentation.
        preprocessing: The test-time spec (`keras_circle.data.make_spec`):
            what evaluation maps over test images and what the export
            records and serves, so served embeddings equal evaluated ones.
        eval_sets: Dict of evaluation inputs, keyed by role: `"test"`
            (retrieval/faces), `"query"` and `"gallery"` (re-ID), each
            `(images_or_paths, labels, cams_or_None)`; `"pairs"` for faces.
    """

    source: object
    num_classes: int
    preprocess_train: Callable
    preprocessing: dict
    eval_sets: dict

    @property
    def preprocess_test(self):
        """`(image, label) -> (image, label)`: the spec's test-time path."""
        return data.test_time_preprocess(self.preprocessing)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One task family's choices, as `keras_circle.pipeline.run` calls them.

    Attributes:
        task: The `config.task` this recipe runs.
        load_data: `config -> TaskData`.
        build_model: `(config, num_classes) -> (training model, embedder)`.
        build_loss: `config -> keras.losses.Loss` for the training model.
        evaluate: `(config, embedder, task_data, plot_dir) -> metrics dict`,
            the family's protocol (plots, when `config.eval.plots`, go to
            `plot_dir`).
    """

    task: str
    load_data: Callable
    build_model: Callable
    build_loss: Callable
    evaluate: Callable
