"""Shared pytest set-up: quiet TensorFlow, the Keras TF backend, and deterministic seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Two logical CPU devices let MirroredStrategy tests run on a machine without GPUs; must be set before
# TensorFlow initialises its devices, hence here and not in a test.
os.environ.setdefault("DC_KERAS_TEST_LOGICAL_CPUS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _configure_tensorflow():
    import tensorflow as tf

    # Importing tfmot sets TF_USE_LEGACY_KERAS=1 for the process; touching tf.keras first pins it to
    # Keras 3 whatever order the test files are collected in.
    _ = tf.keras.layers
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(os.environ["DC_KERAS_TEST_LOGICAL_CPUS"]))
    except RuntimeError:
        pass  # devices already initialised by an earlier import; MirroredStrategy tests then skip


_configure_tensorflow()


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
