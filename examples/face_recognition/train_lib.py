"""Deprecated: `train.train_and_evaluate` of this folder replaces this module."""

from keras_circle import tasks
from keras_circle.tasks.face_recognition import RECIPE

train_and_evaluate = tasks.deprecated_train_lib(RECIPE)
