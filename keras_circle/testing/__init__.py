"""Slow references for tests and benchmarks (not for training).

- `keras_circle.testing.reference`: float64 NumPy loops written from the
  paper, independent of the package's loss code.
- `keras_circle.testing.backend`: value and gradients, and XLA compilation,
  on the current Keras backend.
- `keras_circle.testing.autodiff`: the pair-wise loss by autodiff of the
  fused kernel's forward, to test its hand-written backward against.
"""
