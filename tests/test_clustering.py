"""Weight sharing wrappers: cluster_weights, fine-tuning, sparsity, strip_clustering, save/load, bad input."""
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import dc_keras
from dc_keras.clustering.wrapper import ClusterWeights


def _mlp(prune_fraction=0.0, seed=0):
    """A small trained-looking MLP; `prune_fraction` of each kernel zeroed by magnitude (simulated pruning)."""
    inputs = keras.Input((12,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(4, name="fc2")(x)
    model = keras.Model(inputs, outputs)
    if prune_fraction:
        for name in ("fc1", "fc2"):
            kernel = model.get_layer(name).kernel
            w = kernel.numpy()
            w[np.abs(w) < np.quantile(np.abs(w), prune_fraction)] = 0.0
            kernel.assign(w)
    return model


def _data(n=128, features=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, :classes].argmax(axis=1)).astype("int32")
    return x, y


def _compile(model):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_default_bits_follow_the_paper():
    conv_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(conv_input)  # 432 weights: room for 256 clusters
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    model = keras.Model(conv_input, out)
    clustered = dc_keras.cluster_weights(model)
    assert clustered.get_layer("cluster_conv").number_of_clusters == 2 ** 8
    assert clustered.get_layer("cluster_fc").number_of_clusters == 2 ** 5
    assert clustered.get_layer("cluster_conv").bits == 8 and clustered.get_layer("cluster_fc").bits == 5


def test_tiny_layer_gets_one_cluster_per_weight_by_default(caplog):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 2, name="tiny")])  # 8 weights
    with caplog.at_level(logging.WARNING, logger="dc_keras.clustering"):
        clustered = dc_keras.cluster_weights(model)
    assert clustered.layers[0].number_of_clusters == 8
    assert "tiny" in caplog.text


def test_per_layer_bits_and_clusters_and_sequential():
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, name="a"),
                              keras.layers.Dense(16, name="b"), keras.layers.Dense(4, name="c")])
    clustered = dc_keras.cluster_weights(model, number_of_clusters={"a": 7}, bits={"b": 3})
    assert isinstance(clustered, keras.Sequential)
    ks = {layer.layer.name: layer.number_of_clusters for layer in clustered.layers}
    assert ks == {"a": 7, "b": 8, "c": 32}
    for layer in clustered.layers:
        assert len(np.unique(layer.get_clustered_weights()["kernel"])) <= layer.number_of_clusters


def test_clustered_model_matches_original_outputs_closely_and_leaves_it_alone():
    model = _mlp()
    x, _ = _data()
    before = [w.copy() for w in model.get_weights()]
    clustered = dc_keras.cluster_weights(model, bits=6)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(v.trainable for v in model.get_layer("fc1").weights)
    out_original = model.predict(x, verbose=0)
    out_clustered = clustered.predict(x, verbose=0)
    assert np.max(np.abs(out_original - out_clustered)) < 0.1 * np.max(np.abs(out_original))


def test_unsupported_layers_pass_through_with_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="dc_keras.clustering"):
        clustered = dc_keras.cluster_weights(_mlp(), bits=4)
    notices = [r for r in caplog.records if "not clustered" in r.getMessage()]
    assert len(notices) == 1 and "bn (BatchNormalization)" in notices[0].getMessage()
    assert isinstance(clustered.get_layer("bn"), keras.layers.BatchNormalization)


def test_trainable_variables_are_centroids_not_original_kernels():
    clustered = dc_keras.cluster_weights(_mlp(), bits=4)
    names = {v.path for v in clustered.trainable_variables}
    assert "cluster_fc1/kernel_centroids" in names and "fc1/bias" in names
    assert "fc1/kernel" not in names
    assert "cluster_fc1/kernel_indices" in {v.path for v in clustered.non_trainable_variables}


def test_centroid_gradient_is_sum_of_weight_gradients():
    layer = keras.layers.Dense(5, name="small")
    layer.build((None, 6))
    wrapper = dc_keras.cluster_weights(layer, number_of_clusters=4)
    centroids, indices = wrapper.get_codebooks()["kernel"]
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 6)).astype("float32"))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(wrapper(x)))
    grad = tape.gradient(loss, wrapper.trainable_variables[0])
    assert wrapper.trainable_variables[0].path.endswith("kernel_centroids")

    # Hand computation: dL/dW of y = xW + b with L = sum(y^2) is x^T (2 y); then sum per cluster.
    shared = centroids[indices]
    y = x.numpy() @ shared + layer.bias.numpy()
    dw = x.numpy().T @ (2 * y)
    expected = np.array([dw[indices == j].sum() for j in range(4)])
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_indices_fixed_and_centroids_move_during_fit():
    clustered = _compile(dc_keras.cluster_weights(_mlp(), bits=3))
    wrapper = clustered.get_layer("cluster_fc1")
    centroids_before, indices_before = wrapper.get_codebooks()["kernel"]
    x, y = _data()
    clustered.fit(x, y, epochs=2, batch_size=32, verbose=0)
    centroids_after, indices_after = wrapper.get_codebooks()["kernel"]
    assert np.array_equal(indices_before, indices_after)
    assert not np.allclose(centroids_before, centroids_after)
    assert len(np.unique(wrapper.get_clustered_weights()["kernel"])) <= 8


def test_preserve_sparsity_keeps_pruned_weights_exactly_zero():
    model = _mlp(prune_fraction=0.8)
    zero_masks = {n: model.get_layer(n).kernel.numpy() == 0 for n in ("fc1", "fc2")}
    clustered = _compile(dc_keras.cluster_weights(model, bits=3, preserve_sparsity=True))
    for name, mask in zero_masks.items():
        shared = clustered.get_layer("cluster_" + name).get_clustered_weights()["kernel"]
        assert np.array_equal(shared == 0, mask)
    x, y = _data()
    clustered.fit(x, y, epochs=3, batch_size=16, verbose=0)
    stripped = dc_keras.strip_clustering(clustered)
    for name, mask in zero_masks.items():
        kernel = stripped.get_layer(name).kernel.numpy()
        assert np.array_equal(kernel == 0, mask)  # sparsity pattern kept bit for bit
        assert np.all(np.signbit(kernel[mask]) == False)  # noqa: E712 - +0.0, not -0.0
        assert len(np.unique(kernel[kernel != 0])) <= 8


def test_without_preserve_sparsity_zeros_are_clustered():
    model = _mlp(prune_fraction=0.5)
    clustered = dc_keras.cluster_weights(model, bits=2, preserve_sparsity=False)
    _, indices = clustered.get_layer("cluster_fc1").get_codebooks()["kernel"]
    assert indices.max() < 4  # no "pruned" index
    assert not clustered.get_layer("cluster_fc1").preserve_sparsity


def test_strip_gives_plain_model_with_exact_centroid_values():
    clustered = _compile(dc_keras.cluster_weights(_mlp(prune_fraction=0.5), number_of_clusters=5))
    x, y = _data()
    clustered.fit(x, y, epochs=1, verbose=0)
    stripped = dc_keras.strip_clustering(clustered)
    assert not any(isinstance(layer, ClusterWeights) for layer in stripped.layers)
    assert [layer.name for layer in stripped.layers[1:]] == ["fc1", "bn", "fc2"]
    for name in ("fc1", "fc2"):
        centroids, _ = clustered.get_layer("cluster_" + name).get_codebooks()["kernel"]
        kernel = stripped.get_layer(name).kernel.numpy()
        values = np.unique(kernel[kernel != 0])
        assert len(values) <= 5
        # Bitwise: every stored value is one of the float32 centroids.
        assert set(values.view(np.uint32)) <= set(centroids.astype(np.float32).view(np.uint32))
    np.testing.assert_allclose(stripped.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-5)
    assert all(v.trainable for v in stripped.get_layer("fc1").weights)


def test_strip_single_wrapper():
    layer = keras.layers.Dense(3)
    layer.build((None, 5))
    plain = dc_keras.strip_clustering(dc_keras.cluster_weights(layer, number_of_clusters=2))
    assert isinstance(plain, keras.layers.Dense) and len(np.unique(plain.kernel.numpy())) <= 2


def test_save_load_resumes_fine_tuning(tmp_path):
    clustered = _compile(dc_keras.cluster_weights(_mlp(prune_fraction=0.6), bits=3,
                                                  cluster_centroids_init="kmeans++", seed=3))
    x, y = _data()
    clustered.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "clustered.keras")
    clustered.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: registered as dc_keras>ClusterWeights
    wrapper, original = loaded.get_layer("cluster_fc1"), clustered.get_layer("cluster_fc1")
    for name in ("kernel",):
        c0, i0 = original.get_codebooks()[name]
        c1, i1 = wrapper.get_codebooks()[name]
        assert np.array_equal(c0, c1) and np.array_equal(i0, i1)
    assert wrapper.cluster_centroids_init.value == "kmeans++" and wrapper.number_of_clusters == 8
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0))
    assert "fc1/kernel" not in {v.path for v in loaded.trainable_variables}
    # Both continue identically from the same state.
    loaded.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    clustered.fit(x, y, epochs=1, batch_size=128, shuffle=False, verbose=0)
    np.testing.assert_allclose(wrapper.get_codebooks()["kernel"][0], original.get_codebooks()["kernel"][0],
                               rtol=1e-5, atol=1e-6)
    assert np.array_equal(wrapper.get_codebooks()["kernel"][1], i0)


def test_from_config_roundtrip():
    layer = keras.layers.Dense(3, name="d")
    layer.build((None, 5))
    wrapper = dc_keras.cluster_weights(layer, number_of_clusters=4, cluster_centroids_init="density")
    clone = ClusterWeights.from_config(wrapper.get_config())
    assert clone.number_of_clusters == 4 and clone.cluster_centroids_init.value == "density"
    assert clone.name == "cluster_d" and clone.layer.name == "d"
    out = clone(np.ones((2, 5), "float32"))  # builds and clusters its fresh weights
    assert out.shape == (2, 3) and len(np.unique(clone.get_clustered_weights()["kernel"])) <= 4


def test_conv_and_embedding_layers():
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(50, 8, name="emb")(inputs)
    x = keras.layers.Conv1D(8, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    clustered = dc_keras.cluster_weights(model, bits=4)
    kinds = {layer.layer.name: layer.kind for layer in clustered.layers if isinstance(layer, ClusterWeights)}
    assert kinds == {"emb": "embedding", "conv": "conv", "out": "fc"}
    x = np.random.default_rng(0).integers(0, 50, size=(8, 6)).astype("int32")
    clustered.compile("adam", "mse")
    clustered.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    stripped = dc_keras.strip_clustering(clustered)
    assert len(np.unique(stripped.get_layer("emb").embeddings.numpy())) <= 16


class _Scale(keras.layers.Layer, dc_keras.ClusterableLayer):
    """A custom layer opting in through get_clusterable_weights()."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="random_normal")
        self.offset = self.add_weight(name="offset", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x * self.scale + self.offset

    def get_clusterable_weights(self):
        return [("scale", self.scale)]


def test_custom_layer_protocol():
    model = keras.Sequential([keras.Input((20,)), _Scale(name="scale_layer")])
    clustered = dc_keras.cluster_weights(model, number_of_clusters=3)
    wrapper = clustered.layers[0]
    assert wrapper.kind == "custom"
    shared = wrapper.get_clustered_weights()["scale"]
    x = np.ones((1, 20), "float32")
    np.testing.assert_allclose(clustered(x).numpy()[0], shared, rtol=1e-6)


def test_list_of_layers():
    a, b = keras.layers.Dense(4, name="la"), keras.layers.Dense(4, name="lb")
    a.build((None, 8))
    b.build((None, 8))
    wrappers = dc_keras.cluster_weights([a, b], bits={"la": 2, "lb": 1})
    assert [w.number_of_clusters for w in wrappers] == [4, 2]


def test_tfmot_enum_accepted():
    tfmot_config = pytest.importorskip("tensorflow_model_optimization.python.core.clustering.keras.cluster_config")
    layer = keras.layers.Dense(4)
    layer.build((None, 8))
    wrapper = dc_keras.cluster_weights(layer, number_of_clusters=4,
                                       cluster_centroids_init=tfmot_config.CentroidInitialization.DENSITY_BASED)
    assert wrapper.cluster_centroids_init is dc_keras.CentroidInitialization.DENSITY_BASED


# -- bad input ---------------------------------------------------------------------------------------------

def _built_dense(name="dense_x", units=4, inputs=8):
    layer = keras.layers.Dense(units, name=name)
    layer.build((None, inputs))
    return layer


@pytest.mark.parametrize("bits", [0, 17, -3, 2.5])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=rf"dense_x.*{bits}"):
        dc_keras.cluster_weights(_built_dense(), bits=bits)


def test_more_clusters_than_nonzero_weights():
    layer = _built_dense(units=2, inputs=3)  # 6 weights
    w = layer.kernel.numpy()
    w[0] = 0.0
    layer.kernel.assign(w)
    with pytest.raises(ValueError, match=r"dense_x.*5 clusters.*only 4 nonzero"):
        dc_keras.cluster_weights(layer, number_of_clusters=5)
    with pytest.raises(ValueError, match=r"dense_x.*8"):
        dc_keras.cluster_weights(layer, bits=3)


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="'never_built' is not built"):
        dc_keras.cluster_weights(keras.layers.Dense(3, name="never_built"), bits=2)


def test_unknown_init():
    with pytest.raises(ValueError, match="'median'"):
        dc_keras.cluster_weights(_built_dense(), bits=2, cluster_centroids_init="median")


def test_unsupported_layer_requested_directly():
    layer = keras.layers.BatchNormalization(name="bn_direct")
    layer.build((None, 4))
    with pytest.raises(ValueError, match="'bn_direct'.*BatchNormalization"):
        dc_keras.cluster_weights(layer)


def test_both_clusters_and_bits():
    with pytest.raises(ValueError, match="not both"):
        dc_keras.cluster_weights(_built_dense(), number_of_clusters=4, bits=2)
    with pytest.raises(ValueError, match="dense_x.*not both"):
        dc_keras.cluster_weights(_built_dense(), number_of_clusters={"dense_x": 4}, bits={"dense_x": 2})


def test_unknown_layer_name_in_dict():
    with pytest.raises(ValueError, match="'fc9'"):
        dc_keras.cluster_weights(_mlp(), bits={"fc9": 3})


def test_pruning_wrapped_layer_is_refused():
    class PruneLowMagnitude(keras.layers.Wrapper):  # stands in for dc_keras's (and tfmot's) wrapper
        def call(self, x):
            return self.layer(x)

    wrapped = PruneLowMagnitude(_built_dense(name="pruned_dense"))
    with pytest.raises(ValueError, match="pruned_dense.*strip_pruning"):
        dc_keras.cluster_weights(wrapped, bits=2)
    model = keras.Sequential([keras.Input((8,)), wrapped])
    with pytest.raises(ValueError, match="strip_pruning"):
        dc_keras.cluster_weights(model, bits=2)


def test_already_clustered():
    wrapper = dc_keras.cluster_weights(_built_dense(), bits=2)
    with pytest.raises(ValueError, match="already clustered"):
        dc_keras.cluster_weights(wrapper, bits=2)


def test_subclassed_model_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        dc_keras.cluster_weights(net, bits=2)
