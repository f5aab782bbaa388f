"""The tiny model and data that pipeline tests train in seconds: 8 features, 3 classes (the argmax of the
first three features), 240 training and 60 test examples."""
import keras
import numpy as np


def tiny_model():
    """Dense 8 -> 32 (relu, "fc1") -> 3 ("fc2"), named "tiny"."""
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="fc2")], name="tiny")


def tiny_data(n_train=240, n_test=60):
    """((x_train, y_train), (x_test, y_test)) drawn with a fixed seed; labels are the argmax of x[:, :3]."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, 8)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
