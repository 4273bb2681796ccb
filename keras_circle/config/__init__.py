"""Typed run configurations: dataclasses loaded from JSON or TOML files.

A run is described by a `Config` (task, data, model, loss, training,
evaluation, export): the schema, with every closed set of choices a
`typing.Literal`, is in `schema`; reading files, `--set` overrides and the
checks that name the offending key are in `loading`.

Example:

>>> config = keras_circle.config.load_config(
...     "configs/person_reid.json", overrides=["train.epochs=2"])
>>> config.loss.gamma
128.0
"""

from keras_circle.config.loading import apply_overrides
from keras_circle.config.loading import from_dict
from keras_circle.config.loading import load_config
from keras_circle.config.loading import read_file
from keras_circle.config.loading import to_dict
from keras_circle.config.loading import validate
from keras_circle.config.schema import TASKS
from keras_circle.config.schema import Config
from keras_circle.config.schema import ConfigError
from keras_circle.config.schema import DataConfig
from keras_circle.config.schema import EvalConfig
from keras_circle.config.schema import LossConfig
from keras_circle.config.schema import ModelConfig
from keras_circle.config.schema import TrainConfig
from keras_circle.config.schema import loss_defaults

__all__ = [
    "TASKS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "loss_defaults",
    "read_file",
    "to_dict",
    "validate",
]
