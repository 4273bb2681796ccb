"""TensorFlow-only: the training machinery every task family's recipe shares.

Strategy, resumable `fit`, the run folder's checks, the report and the
export (`run`, `run_folder`, `evaluation`); the recipe's contract (`recipe`);
models, losses and optimizers built from a config (`models`); data any recipe
can use (`datasets`). The recipes themselves are `keras_circle.tasks`.
"""

from keras_circle.pipeline.recipe import Recipe
from keras_circle.pipeline.recipe import TaskData
from keras_circle.pipeline.run import evaluate
from keras_circle.pipeline.run import select_strategy
from keras_circle.pipeline.run import train_and_evaluate
