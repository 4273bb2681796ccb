"""Fine-grained retrieval: train, evaluate and export one run.

    python examples/fine_grained_retrieval/train.py [CONFIG] [--workdir DIR] [--set key=value]

Names its recipe, `keras_circle.tasks.fine_grained_retrieval`; the command line and
`train_and_evaluate(config, workdir)` are `keras_circle.tasks.example_main`
and `keras_circle.tasks.example_train_and_evaluate` for it.
"""

from keras_circle import tasks
from keras_circle.tasks.fine_grained_retrieval import RECIPE

train_and_evaluate = tasks.example_train_and_evaluate(RECIPE)

if __name__ == "__main__":
    tasks.example_main(RECIPE)
