"""One `MirroredStrategy` over the conftest's two logical CPUs, shared by the tests.

Each `MirroredStrategy` instance numbers its collective ops from the same
start, and the process-wide collective executor rejects a second instance
reusing a key with another type ("Collective instance 100 expected type 2"),
so the tests of one process share the package's single instance
(`keras_circle.distribute.mirrored_strategy`), as a program would.
"""

from keras_circle import distribute


def mirrored_strategy():
    strategy = distribute.mirrored_strategy()
    assert strategy.num_replicas_in_sync == 2
    return strategy
