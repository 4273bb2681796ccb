"""Loading a run config: typed building, range checks, files and overrides.

Files hold only the keys they change; every field has a default that means
something (loss keys: the paper's values for the task). Unknown keys, values
of the wrong type (2.5 for an int, 1 for a bool, NaN for a float), values
outside a `Literal`'s choices and values out of range (0 epochs, a negative
size) are rejected with the dotted key named, both in files and in
`--set key=value` overrides, so a typo never silently trains with a default.
"""

import dataclasses
import json
import math
import pathlib
import types
import typing

from keras_circle import backbones
from keras_circle.config.schema import BUILTIN_PREFIX
from keras_circle.config.schema import BUILTIN_SOURCES
from keras_circle.config.schema import DEFAULT_TASK
from keras_circle.config.schema import TASKS
from keras_circle.config.schema import BuiltinSet
from keras_circle.config.schema import ClassLoss
from keras_circle.config.schema import Config
from keras_circle.config.schema import ConfigError
from keras_circle.config.schema import PairLoss
from keras_circle.config.schema import loss_defaults


def _check_value(value, annotation, key):
    """Returns `value` checked against `annotation` (ints widen to float)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        annotation = next(a for a in options if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        # `type` too: True == 1, and 1.0 == 1.
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ConfigError(f"`{key}` must be one of {list(choices)}; got {value!r}.")
        return value
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{key}` must be a list; got {value!r}.")
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    # bool is an int subclass: keep True out of int and float fields.
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # JSON's NaN and Infinity parse as floats; no field means anything with them.
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"`{key}` must be a finite number; got {value!r}.")
    if isinstance(value, bool) != (annotation is bool) or not isinstance(
        value, annotation
    ):
        raise ConfigError(
            f"`{key}` must be {annotation.__name__}; got {value!r} "
            f"({type(value).__name__})."
        )
    return value


def _build(cls, values, prefix=""):
    if not isinstance(values, dict):
        raise ConfigError(f"`{prefix or 'config'}` must be a table; got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"Unknown config key `{name}`; known keys here: {sorted(fields)}."
            )
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{name}.")
        else:
            kwargs[key] = _check_value(value, hints[key], name)
    return cls(**kwargs)


def _ranges(config):
    """`{key: (value, lowest, highest, what)}`: every numeric field's range.

    `lowest` is inclusive, `highest` exclusive or `None` for no bound (so
    `(x, 0, None)` means x >= 0). Sizes and counts start at 1: a zero
    there would run nothing or fail deep inside TensorFlow.
    """
    dc, mc, lc, tc, ec = (config.data, config.model, config.loss, config.train,
                          config.eval)  # fmt: skip
    # A pair-wise batch needs a positive and a negative for every anchor, or
    # the loss is 0 without a word.
    pairs = lc.labels == "pair"
    note = "; pair-wise labels need 2" if pairs else ""
    # Backbones have their own minimum (`backbones.check_backbone`).
    smallest_image = 4 if mc.backbone == "small_cnn" else 1
    margin_top = math.pi / 2 if lc.name == "arcface" else 1.0
    ranges = {
        "data.p": (dc.p, 2 if pairs else 1, None, f"classes per batch{note}"),
        "data.k": (dc.k, 2 if pairs else 1, None, f"images per class{note}"),
        "data.max_train_images": (dc.max_train_images, 0, None, "0: all"),
        "data.max_test_images": (dc.max_test_images, 0, None, "0: all"),
        "model.embedding_dim": (mc.embedding_dim, 1, None, "a size"),
        "model.width": (mc.width, 1, None, "a width"),
        "loss.gamma": (lc.gamma, math.ulp(0.0), None, "the scale factor"),
        "loss.margin": (lc.margin, 0.0, margin_top, f"the relaxation of `{lc.name}`"),
        "train.epochs": (tc.epochs, 1, None, "a run trains at least one epoch"),
        "train.steps_per_epoch": (tc.steps_per_epoch, 0, None, "0: from the data"),
        "train.backup_every": (tc.backup_every, 0, None, "0: once per epoch"),
        "train.learning_rate": (tc.learning_rate, math.ulp(0.0), None, "the peak rate"),
        "train.weight_decay": (tc.weight_decay, 0.0, None, "0: none"),
        "train.seed": (tc.seed, 0, None, "a NumPy seed"),
        "train.replicas": (tc.replicas, 0, None, "0: every device"),
        "train.verbose": (tc.verbose, 0, 3, "0, 1 or 2"),
        "eval.batch_size": (ec.batch_size, 1, None, "a batch size"),
    }
    for i, size in enumerate(dc.image_size):
        what = "pixels" + (
            f"; `{mc.backbone}` needs at least {smallest_image}"
            if smallest_image > 1
            else ""
        )
        ranges[f"data.image_size[{i}]"] = (size, smallest_image, None, what)
    for i, fraction in enumerate(tc.lr_decay_at):
        ranges[f"train.lr_decay_at[{i}]"] = (fraction, 0.0, 1.0, "a fraction")
    for i, rank in enumerate(ec.ks):
        ranges[f"eval.ks[{i}]"] = (rank, 1, None, "a rank")
    return ranges


def _check_ranges(config):
    for key, (value, lowest, highest, what) in _ranges(config).items():
        if lowest <= value and (highest is None or value < highest):
            continue
        # A float lower bound of one ulp stands for "> 0".
        bounds = "> 0" if 0 < lowest < 1e-300 else f">= {lowest}"
        if highest is not None:
            bounds += f" and < {highest:.4g}"
        raise ConfigError(f"`{key}` must be {bounds} ({what}); got {value!r}.")
    if not config.eval.ks:
        raise ConfigError("`eval.ks` must list at least one rank; got [].")


def _check_builtin_paths(dc):
    """A `"builtin:<set>..."` data path names a set of `data.source`."""
    for key in ("root", "lfw_pairs", "lfw_root"):
        value = getattr(dc, key)
        if not (isinstance(value, str) and value.startswith(BUILTIN_PREFIX)):
            continue
        name = value[len(BUILTIN_PREFIX) :].split("/", 1)[0]
        _check_value(name, BuiltinSet, f"data.{key} (the set of {value!r})")
        if BUILTIN_SOURCES[name] != dc.source:
            raise ConfigError(
                f"`data.{key}={value!r}` is a {BUILTIN_SOURCES[name]!r} folder; "
                f"`data.source` is {dc.source!r}."
            )


def validate(config):
    """Checks what the types do not: loss pairings and numeric ranges.

    Args:
        config: A `Config`.

    Returns:
        `config`.

    Raises:
        ConfigError: naming the first offending key.
    """
    lc = config.loss
    allowed = typing.get_args(ClassLoss if lc.labels == "class" else PairLoss)
    if lc.name not in allowed:
        raise ConfigError(
            f"`loss.name={lc.name!r}` does not take `loss.labels={lc.labels!r}`; "
            f"with {lc.labels!r} labels `loss.name` is one of {list(allowed)}."
        )
    if len(config.data.image_size) != 2:
        raise ConfigError(
            f"`data.image_size` must be [height, width]; got {config.data.image_size}."
        )
    _check_ranges(config)
    _check_builtin_paths(config.data)
    backbones.check_backbone(config.model, config.data.image_size, config.data.channels)
    for key in ("flip_test", "rerank"):
        # Only the re-ID protocol reads them: elsewhere they would do nothing.
        if getattr(config.eval, key) and config.task != "person_reid":
            raise ConfigError(
                f"`eval.{key}` is a person re-ID option; task {config.task!r} "
                "does not use it."
            )
    backup, steps = config.train.backup_every, config.train.steps_per_epoch
    if backup and steps and steps % backup:
        raise ConfigError(
            f"`train.backup_every` ({backup}) must divide `train.steps_per_epoch` "
            f"({steps})."
        )
    return config


def from_dict(values):
    """Builds and validates a `Config` from nested dicts (e.g. parsed JSON).

    Loss keys that `values` leaves out take the paper's settings for its
    task (`keras_circle.PRESETS`).
    """
    if isinstance(values, dict) and isinstance(values.get("loss", {}), dict):
        task = values.get("task", DEFAULT_TASK)
        if task in TASKS:
            values = {
                **values,
                "loss": {**loss_defaults(task), **values.get("loss", {})},
            }
    return validate(_build(Config, values))


def to_dict(config):
    """The config as nested plain dicts (JSON-able)."""
    return dataclasses.asdict(config)


def _parse_override(text):
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Overrides look like key=value; got {text!r}.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word is a string: data.root=/data/market
    return key.strip(), value


def apply_overrides(values, overrides):
    """Sets dotted `key=value` overrides on nested dicts, in place.

    Values are parsed as JSON (`3`, `0.1`, `true`, `[1, 2]`, `null`) and
    fall back to a plain string; their type is checked when the config is
    built, so `train.epochs=two` fails naming `train.epochs`.

    Args:
        values: Nested dicts of a config file.
        overrides: Iterable of `"section.key=value"` strings.

    Returns:
        `values`.
    """
    for text in overrides or ():
        key, value = _parse_override(text)
        *sections, leaf = key.split(".")
        node, cls = values, Config
        for depth, section in enumerate(sections):
            hints = typing.get_type_hints(cls)
            path = ".".join(sections[: depth + 1])
            if section not in hints or not dataclasses.is_dataclass(hints[section]):
                raise ConfigError(f"Unknown config section `{path}` in {text!r}.")
            cls = hints[section]
            node = node.setdefault(section, {})
        if leaf not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"Unknown config key `{key}` in {text!r}.")
        node[leaf] = value
    return values


def read_file(path):
    """Nested dicts from a `.json` or `.toml` file.

    Raises:
        ConfigError: the file is neither, or does not parse (named with the
            line and column of the fault).
        OSError: the file cannot be read.
    """
    import tomllib  # Python 3.11+

    path = pathlib.Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"Config files are .json or .toml; got {path}.")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}."
        ) from None
    except tomllib.TOMLDecodeError as error:
        # tomllib's message carries "(at line L, column C)".
        raise ConfigError(f"{path} is not valid TOML: {error}.") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text: {error}.") from None


def load_config(path, overrides=()):
    """Loads a config file, applies `key=value` overrides, checks it all.

    Args:
        path: A `.json` or `.toml` file.
        overrides: `"section.key=value"` strings (the CLI's `--set`).

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: An unknown key, a wrong type or a bad choice, named.
    """
    return from_dict(apply_overrides(read_file(path), overrides))
