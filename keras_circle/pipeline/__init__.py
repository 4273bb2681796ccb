"""TensorFlow-only: the training machinery shared by the examples and the CLI."""

from keras_circle.pipeline.run import evaluate
from keras_circle.pipeline.run import select_strategy
from keras_circle.pipeline.run import train_and_evaluate
