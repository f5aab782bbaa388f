"""CompressedDense / CompressedConv2D / CompressedEmbedding and compress_model: equality with the original
model, config round trip, .keras and SavedModel save/load in a fresh process, and clear errors."""
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import dc_keras
from dc_keras import codec
from dc_keras.compressed_layers import CompressedConv2D, CompressedDense, CompressedEmbedding, compress_model


def prune_and_cluster(model, sparsity=0.8, bits=4, seed=0):
    """Stands in for prune -> cluster -> strip: each Dense/Conv2D/Embedding weight gets `sparsity` zeros and
    at most 2^bits distinct nonzero values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers if not hasattr(model, "_flatten_layers") else model._flatten_layers():
        if type(layer) in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Embedding):
            var = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
            w = var.numpy()
            centroids = np.quantile(w, np.linspace(0.02, 0.98, 2 ** bits)).astype(np.float32)
            centroids[centroids == 0] = 1e-3
            quantised = centroids[np.abs(w[..., None] - centroids).argmin(-1)]
            quantised[rng.random(w.shape) < sparsity] = 0
            var.assign(quantised)
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32) * 0.1)
    return model


def assert_close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()))


def mlp():
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dropout(0.3), keras.layers.Dense(10, activation="softmax")])


def functional():
    ids = keras.Input((6,), dtype="int32", name="ids")
    image = keras.Input((12, 12, 3), name="image")
    e = keras.layers.Embedding(50, 8, name="embed")(ids)
    e = keras.layers.Flatten()(e)
    c = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(image)
    c = keras.layers.BatchNormalization()(c)
    c = keras.layers.Conv2D(6, (3, 2), strides=2, use_bias=False, name="conv_b")(c)
    c = keras.layers.Conv2D(4, 3, dilation_rate=2, name="conv_c")(c)
    c = keras.layers.Flatten()(c)
    h = keras.layers.Concatenate()([e, c])
    h = keras.layers.Dense(32, activation="tanh", name="fc")(h)
    out = keras.layers.Dense(5, name="head")(h)
    return keras.Model([ids, image], out)


def functional_inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50, size=(n, 6)).astype(np.int32), rng.normal(size=(n, 12, 12, 3)).astype(np.float32)]


def test_sequential_round_trip():
    model = prune_and_cluster(mlp())
    compressed = compress_model(model)
    assert [type(layer).__name__ for layer in compressed.layers] == ["CompressedDense", "Dropout",
                                                                     "CompressedDense"]
    x = np.random.default_rng(1).normal(size=(9, 20)).astype(np.float32)
    assert_close(compressed(x), model(x))
    assert_close(compressed.predict(x, verbose=0), model.predict(x, verbose=0))
    # the original is untouched and the blob is the only copy of each kernel
    assert type(model.layers[0]) is keras.layers.Dense
    blob = compressed.layers[0].blob
    assert blob.dtype == "uint8" and not blob.trainable
    np.testing.assert_array_equal(codec.decode(blob.numpy().tobytes()), model.layers[0].kernel.numpy().T)


def test_functional_round_trip_with_conv_embedding_and_other_layers():
    model = prune_and_cluster(functional(), bits=5)
    x = functional_inputs()
    model(x, training=False)  # BatchNormalization stats stay at their initial values either way
    compressed = compress_model(model, layer_options={"conv_a": {"bits": 6, "index_bits": 4, "coder": "rans"}})
    kinds = {layer.name: type(layer).__name__ for layer in compressed.layers}
    assert kinds["embed"] == "CompressedEmbedding" and kinds["conv_a"] == "CompressedConv2D"
    assert kinds["fc"] == "CompressedDense" and kinds["batch_normalization"] == "BatchNormalization"
    assert codec.parse_info(compressed.get_layer("conv_a").blob.numpy().tobytes()).bits == 6
    assert_close(compressed(x), model(x))


def test_inferred_bits_are_the_smallest_that_fit():
    model = prune_and_cluster(mlp(), bits=3)
    compressed = compress_model(model)
    info = codec.parse_info(compressed.layers[0].blob.numpy().tobytes())
    assert info.bits == 3 and info.index_bits == 5  # paper default for fully-connected layers


def test_dense_mode_matches_sparse_mode_and_handles_extra_leading_dims():
    model = keras.Sequential([keras.Input((3, 20)), keras.layers.Dense(7)])
    prune_and_cluster(model)
    x = np.random.default_rng(2).normal(size=(2, 3, 20)).astype(np.float32)
    for mode in ("sparse", "dense"):
        compressed = compress_model(model, dense_mode=mode)
        assert compressed.layers[0].mode == mode
        assert compressed.output_shape == (None, 3, 7)
        assert_close(compressed(x), model(x))


def test_layer_options_none_skips_a_layer_and_unknown_names_are_errors():
    model = prune_and_cluster(mlp())
    name = model.layers[-1].name
    compressed = compress_model(model, layer_options={name: None})
    assert type(compressed.layers[-1]) is keras.layers.Dense
    np.testing.assert_array_equal(compressed.layers[-1].kernel.numpy(), model.layers[-1].kernel.numpy())
    with pytest.raises(ValueError, match="not in the model"):
        compress_model(model, layer_options={"nope": None})


def test_unclustered_weights_are_a_clear_error():
    model = mlp()  # random init: thousands of distinct values
    with pytest.raises(ValueError, match="distinct nonzero weights.*cluster"):
        compress_model(model)
    prune_and_cluster(model, bits=4)
    with pytest.raises(ValueError, match="bits=2"):
        compress_model(model, bits=2)


def test_layers_built_directly_from_blobs_and_config_round_trip():
    rng = np.random.default_rng(3)
    w = rng.choice(np.array([0, 0, 0, 0.5, -1.0], np.float32), size=(20, 6))
    dense = CompressedDense(6, blob=codec.encode(w.T, bits=1), activation="relu", bias=np.arange(6))
    x = rng.normal(size=(4, 20)).astype(np.float32)
    assert_close(dense(x), np.maximum(x @ w + np.arange(6), 0))

    config = dense.get_config()
    json.dumps(config)  # serialisable
    clone = CompressedDense.from_config(config)
    clone.build((None, 20))
    clone.set_weights(dense.get_weights())
    assert_close(clone(x), dense(x))

    table = rng.choice(np.array([0, 1.5, -2], np.float32), size=(30, 4))
    embed = CompressedEmbedding(blob=codec.encode(table, bits=1), mask_zero=True)
    ids = np.array([[0, 29, 3]])
    assert_close(embed(ids), table[ids])
    np.testing.assert_array_equal(embed.compute_mask(ids), ids != 0)
    assert CompressedEmbedding.from_config(embed.get_config()).get_config() == embed.get_config()

    kernel = rng.choice(np.array([0, 0.25, -0.75], np.float32), size=(3, 3, 2, 5))
    conv = CompressedConv2D(5, 3, padding="same", blob=codec.encode(kernel, bits=2), use_bias=False)
    images = rng.normal(size=(2, 7, 7, 2)).astype(np.float32)
    assert_close(conv(images), tf.nn.conv2d(images, kernel, 1, "SAME"))
    assert CompressedConv2D.from_config(conv.get_config()).get_config() == conv.get_config()


def test_blob_shape_mismatch_is_a_clear_error():
    blob = codec.encode(np.ones((4, 5), np.float32), bits=1)
    with pytest.raises(ValueError, match=r"\[units, input_dim\].*\(4, 5\)"):
        CompressedDense(5, blob=blob)
    with pytest.raises(ValueError, match="expects 5"):
        CompressedDense(4, blob=blob)(np.ones((1, 6), np.float32))
    with pytest.raises(ValueError, match="blob_size"):
        CompressedDense(4, input_dim=5)


def test_registered_for_keras_serialization():
    for cls in (CompressedDense, CompressedConv2D, CompressedEmbedding):
        name = f"dc_keras>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
    assert dc_keras.compress_model is compress_model


def test_training_through_compressed_layers_raises_naming_the_op():
    compressed = compress_model(prune_and_cluster(mlp()))
    x = tf.Variable(np.ones((2, 20), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(compressed(x))
    with pytest.raises(LookupError, match="DcSparseMatMul"):
        tape.gradient(loss, x)


_LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import tensorflow as tf
    import dc_keras  # registers the compressed layers for keras.models.load_model
    import dc_keras.ops  # registers the custom ops before a SavedModel that uses them is loaded

    keras_path, saved_model_dir, inputs_path, out_path = sys.argv[1:]
    inputs = list(np.load(inputs_path).values())
    model = keras.models.load_model(keras_path)
    assert type(model.get_layer("fc")).__name__ == "CompressedDense"
    from_keras = model.predict(inputs, verbose=0)
    serving = tf.saved_model.load(saved_model_dir)
    from_saved_model = serving.serve([tf.constant(i) for i in inputs]).numpy()
    np.savez(out_path, keras=from_keras, saved_model=from_saved_model)
""")


def test_save_and_load_in_a_fresh_process(tmp_path):
    model = prune_and_cluster(functional(), bits=4)
    compressed = compress_model(model)
    x = functional_inputs(n=3, seed=9)
    expected = model.predict(x, verbose=0)
    keras_path, saved_model_dir = tmp_path / "m.keras", tmp_path / "saved_model"
    compressed.save(keras_path)
    compressed.export(saved_model_dir, verbose=False)
    np.savez(tmp_path / "inputs.npz", *x)
    (tmp_path / "loader.py").write_text(_LOADER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "loader.py"), str(keras_path), str(saved_model_dir),
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    assert_close(out["keras"], expected)
    assert_close(out["saved_model"], expected)
    # the compressed file keeps blobs, not dense kernels: it must be far smaller than the original's
    model.save(tmp_path / "original.keras")
    assert keras_path.stat().st_size < (tmp_path / "original.keras").stat().st_size
