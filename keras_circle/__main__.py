"""`python -m keras_circle`: the same command line as `keras-circle`."""

from keras_circle.cli import main

raise SystemExit(main())
