"""keras_circle: paper-exact Circle loss and deep metric learning for Keras 3."""

__version__ = "0.1.0"
