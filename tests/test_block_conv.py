"""Block-pruned Conv2D layers end to end: pruned in blocks of 8 input channels (block_size (8, 1)) or 8 output
channels ((1, 8)), clustered, exported with the conv weights in a block layout, and run by the delegate's
DcConv2D on its block loops (a 3x3 conv through im2col, a 1x1 conv on the input pixels) against Keras; a
corrupt or over-budget block conv blob is refused with a message."""
from __future__ import annotations

import numpy as np
import pytest

from crafted_models import blob_span

import dc_keras
from dc_keras import delegate
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.export import inspect_tflite

INPUT = (8, 8, 16)


def _block_pruned_conv_model(block_size):
    """Two Conv2D layers (3x3 SAME relu, then 1x1) pruned 75% in `block_size` blocks, trained one epoch,
    stripped and weight-shared in 16 clusters; the classifier stays dense."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(INPUT), keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                                                                      name="conv3"),
                              keras.layers.Conv2D(16, 1, name="conv1"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, name="out")])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32,) + INPUT).astype(np.float32), rng.integers(0, 3, 32)
    pruned = dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.75, 0, frequency=1),
                                          block_size=block_size, per_layer={"out": None})
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    clustered = dc_keras.cluster_weights(dc_keras.strip_pruning(pruned), number_of_clusters={"conv3": 16, "conv1": 16},
                                         preserve_sparsity=True, seed=0)
    return dc_keras.strip_clustering(clustered)


@pytest.fixture(scope="module", params=[((8, 1), "cols"), ((1, 8), "rows")], ids=["in-channels", "out-channels"])
def exported(request, tmp_path_factory):
    block_size, axis = request.param
    model = _block_pruned_conv_model(block_size)
    path = tmp_path_factory.mktemp("block_conv") / "model.tflite"
    report = dc_keras.export_tflite(model, path, verify=True)
    return model, path, report, axis


def _run(path_or_bytes, x, options=None):
    """The delegate's output for `x` and the delegate's weight forms."""
    from ai_edge_litert.interpreter import Interpreter

    dc = delegate.load(options=options)
    kwargs = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": str(path_or_bytes)}
    interpreter = Interpreter(experimental_delegates=[dc], **kwargs)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]), delegate.weight_forms(dc)


def test_block_pruned_convs_export_as_blocks_and_match_keras(exported):
    model, path, report, axis = exported
    layers = {layer.name: layer for layer in report.layers}
    for name in ("conv3", "conv1"):
        kernel = model.get_layer(name).kernel.numpy()
        assert (layers[name].op, layers[name].layout, layers[name].block_axis) == ("DcConv2D", "block", axis), name
        assert layers[name].block_len in (8, 16)  # 16 when pairs of kept blocks line up
        assert layers[name].nonzeros == int(np.count_nonzero(kernel))
    inspected = inspect_tflite(path)
    assert {layer.name: layer.layout_text for layer in inspected.layers} == \
        {name: layers[name].layout_text for name in ("conv3", "conv1")}
    assert f"block {axis} x" in inspected.format()

    x = np.random.default_rng(1).normal(size=(3,) + INPUT).astype(np.float32)
    got, forms = _run(path, x)
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-4, atol=1e-5)
    assert [form for op, form in forms if op == "DcConv2D"] == ["block", "block"]


def test_corrupt_or_over_budget_block_conv_blob_is_refused(exported):
    _, path, _, _ = exported
    original = path.read_bytes()
    x = np.zeros((1,) + INPUT, np.float32)
    start, size = blob_span(original, "conv3")
    data = bytearray(original)
    data[start + size // 2] ^= 0x5A
    with pytest.raises((RuntimeError, ValueError), match="dc delegate: .*DcConv2D.*|dc delegate: .*conv3"):
        _run(bytes(data), x)
    with pytest.raises((RuntimeError, ValueError), match="of block form, over the delegate's max_decoded_bytes"):
        _run(original, x, options={"max_decoded_bytes": "64"})
