"""Checks of a compression run's inputs, made before the first training epoch.

A bad input found late costs a whole training run and then fails far from its cause (a NaN test pixel shows
up as 10% accuracy after export, an out-of-range test label as a TensorFlow traceback after dense
training). DeepCompression and dc-compress therefore call these first; each raises ValueError naming the
array or setting and what is wrong with it.

    validate_data(data)                     ((x_train, y_train), (x_test, y_test)) on its own
    check_data_fits_model(model, data)      sample shape and label range against the model
    check_layer_names(model, config)        per-layer config keys against the model's compressible layers
    check_run_inputs(model, config, data)   all three, what a run checks before it trains
"""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

Data = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

_NAMES = ("x_train", "y_train", "x_test", "y_test")


def _check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind != "f":
        return  # integer and bool arrays hold no NaN or infinity
    finite = np.isfinite(a)
    if finite.all():
        return
    bad = a[~finite]
    kinds = [what for what, count in (("NaN", int(np.isnan(bad).sum())), ("infinite", int(np.isinf(bad).sum())))
             if count]
    example = int(np.argwhere(~finite)[0][0])
    raise ValueError(f"data: {name} holds {bad.size} {' and '.join(kinds)} value(s) (the first in example "
                     f"{example}); replace or drop those examples")


def validate_data(data) -> Data:
    """Check ((x_train, y_train), (x_test, y_test)) and return it with NumPy arrays.

    Raises ValueError with the offending part named: wrong nesting, empty arrays, mismatched lengths,
    non-numeric dtypes, NaN or infinite values, labels that are neither integer class ids nor one-hot rows,
    train/test sample shapes that differ. Labels of shape (n, 1) come back as (n,).
    """
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise ValueError("data must be ((x_train, y_train), (x_test, y_test))") from None
    arrays = {}
    for name, value in zip(_NAMES, (x_train, y_train, x_test, y_test)):
        try:
            arrays[name] = np.asarray(value)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"data: {name} is not a rectangular array: {error}") from None
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ValueError(f"data: {name} must be numeric, got dtype {a.dtype}")
        if a.ndim == 0 or len(a) == 0:
            raise ValueError(f"data: {name} is empty")
        if a.size == 0:
            raise ValueError(f"data: {name} has shape {a.shape}: its examples are empty")
        _check_finite(name, a)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise ValueError(f"data: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = arrays[f"y_{split}"] = y[:, 0]
        if y.ndim == 1:
            if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
                raise ValueError(f"data: y_{split} must hold integer class ids (or one-hot rows), "
                                 f"found non-integer values")
            if y.min() < 0:
                raise ValueError(f"data: y_{split} has negative class ids (smallest {y.min()})")
        elif y.ndim != 2:
            raise ValueError(f"data: y_{split} must have shape (n,) of class ids or (n, classes) one-hot, "
                             f"got {y.shape}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"data: x_train examples have shape {arrays['x_train'].shape[1:]} but x_test "
                         f"examples {arrays['x_test'].shape[1:]}")
    if arrays["y_train"].ndim != arrays["y_test"].ndim:
        raise ValueError("data: y_train and y_test must both be class ids or both be one-hot")
    if arrays["y_train"].ndim == 2 and arrays["y_train"].shape[1] != arrays["y_test"].shape[1]:
        raise ValueError(f"data: y_train one-hot rows have {arrays['y_train'].shape[1]} classes but y_test rows "
                         f"{arrays['y_test'].shape[1]}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def check_data_fits_model(model, data: Data) -> None:
    """Raise ValueError when the examples' shape or the labels of either split do not match the model.

    `data` is what validate_data returned. Class ids must lie in 0..outputs-1 and one-hot rows must have one
    column per output, in the training and in the test split alike.
    """
    (x_train, y_train), (_, y_test) = data
    input_shape, output_shape = _shape(model, "input_shape"), _shape(model, "output_shape")
    expected = tuple(input_shape[1:]) if isinstance(input_shape, tuple) else None
    if expected is not None:
        got = tuple(x_train.shape[1:])
        if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(f"data: examples have shape {got} but model {model.name!r} expects {expected}")
    classes = output_shape[-1] if isinstance(output_shape, tuple) and output_shape else None
    if classes is None:
        return
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if y.ndim == 1:
            largest = int(y.max())
            if largest >= classes:  # class ids need not use every output
                raise ValueError(f"data: {name} has class id {largest}: labels name {largest + 1} classes but "
                                 f"model {model.name!r} has {classes} outputs (ids 0..{classes - 1})")
        elif y.shape[1] != classes:
            raise ValueError(f"data: {name} one-hot rows have {y.shape[1]} columns: labels name {y.shape[1]} "
                             f"classes but model {model.name!r} has {classes} outputs")


def _shape(model, attribute: str):
    """model.input_shape / output_shape, or None for a model that has none yet (a subclassed model not called
    so far): its first training step builds it, and Keras then checks what this cannot."""
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if isinstance(shape, (tuple, list)) and all(
        d is None or isinstance(d, int) for d in shape) else None


def check_layer_names(model, config, fields: Iterable[str] = ("sparsity", "quality", "block_size", "bits")) -> None:
    """Per-layer dict keys of `config` must name compressible layers of the model: a typo must not pass
    silently (the layer would quietly stay uncompressed)."""
    from dc_keras.pipeline import compressible_layers

    names = {layer.name for layer in compressible_layers(model)}
    for field in fields:
        value = getattr(config, field)
        if isinstance(value, dict):
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(f"config.{field} names layers that are not compressible layers of the model: "
                                 f"{unknown}; compressible layers are {sorted(names)}")


def check_run_inputs(model, config, data: Data) -> None:
    """Everything a compression run of `model` can check before training: the data on its own, the data
    against the model, and the config's per-layer names. `data` may be raw; raises ValueError."""
    data = validate_data(data)
    check_data_fits_model(model, data)
    check_layer_names(model, config)
