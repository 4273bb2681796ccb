"""Deprecated: `train.train_and_evaluate` of this folder replaces this module."""

from keras_circle import tasks
from keras_circle.tasks.fine_grained_retrieval import RECIPE

train_and_evaluate = tasks.deprecated_train_lib(RECIPE)
