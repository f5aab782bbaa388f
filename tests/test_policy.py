"""The one model walker, wrapper recognition and per-layer option resolver every stage uses."""
import keras
import pytest

import dc_keras
from dc_keras import layer_registry, limits
from dc_keras.per_layer import check_per_layer, is_given, resolve_per_layer


def _nested_model():
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, name="inner_fc")], name="block")
    x = keras.Input((4,))
    h = keras.layers.Dense(8, name="fc1")(x)
    h = inner(h)
    y = keras.layers.Dense(3, name="fc2")(h)
    return keras.Model(x, y, name="outer")


def _names(layers):
    return [layer.name for layer in layers]


def test_walk_descends_nested_models_in_order():
    model = _nested_model()
    leaves = [name for name in _names(layer_registry.walk(model)) if not name.startswith("input")]
    assert leaves == ["fc1", "inner_fc", "fc2"]
    with_containers = _names(layer_registry.walk(model, containers=True))
    assert with_containers.index("block") < with_containers.index("inner_fc")


def test_walk_yields_wrappers_and_enters_them_only_when_asked():
    model = _nested_model()
    pruned = dc_keras.prune_low_magnitude(model)
    wrappers = [layer for layer in layer_registry.walk(pruned) if layer_registry.is_pruning_wrapper(layer)]
    assert len(wrappers) == 3
    assert not any(isinstance(layer, keras.layers.Dense) for layer in layer_registry.walk(pruned))
    inner = [layer for layer in layer_registry.walk(pruned, into_wrappers=True)
             if isinstance(layer, keras.layers.Dense)]
    assert sorted(_names(inner)) == ["fc1", "fc2", "inner_fc"]


def test_wrapper_kind_by_class_and_foreign_wrappers_by_name():
    dense = keras.layers.Dense(2)
    assert layer_registry.wrapper_kind(dense) is None
    assert layer_registry.wrapper_kind(dc_keras.prune_low_magnitude(dense)) == "pruning"
    built = keras.layers.Dense(2)
    built.build((None, 3))
    assert layer_registry.wrapper_kind(dc_keras.cluster_weights(built, bits=2)) == "clustering"

    class ClusterWeights:  # stands for tfmot's tf_keras wrapper class of that name
        layer = dense

    assert layer_registry.wrapper_kind(ClusterWeights()) == "clustering"
    assert layer_registry.is_wrapper(ClusterWeights())


def test_pipeline_compressible_layers_uses_the_walker():
    from dc_keras.pipeline import compressible_layers

    assert _names(compressible_layers(_nested_model())) == ["fc1", "inner_fc", "fc2"]


def test_resolve_per_layer():
    assert resolve_per_layer(None, "a", default=5) == 5
    assert resolve_per_layer(3, "a", default=5) == 3
    assert resolve_per_layer({"a": 4}, "a", default=5) == 4
    assert resolve_per_layer({"b": 4}, "a", default=5) == 5
    assert resolve_per_layer({"a": None}, "a", default=5) == 5
    assert is_given({"a": 1}, "a") and not is_given({"a": 1}, "b") and not is_given(None, "a")
    assert resolve_per_layer({"a": 6}, "a", valid=limits.check_index_bits) == 6
    with pytest.raises(ValueError, match="layer 'a': index_bits"):
        resolve_per_layer({"a": 1}, "a", valid=limits.check_index_bits, label="layer 'a': index_bits")


def test_check_per_layer_messages():
    check_per_layer("X", "bits", {"a": 3}, limits.bits_ok, "1..8")
    with pytest.raises(ValueError, match=r"X: bits\['a'\] must be 1..8, got 9"):
        check_per_layer("X", "bits", {"a": 9}, limits.bits_ok, "1..8")
    with pytest.raises(ValueError, match="keys must be layer names"):
        check_per_layer("X", "bits", {1: 3}, limits.bits_ok, "1..8")


def test_bits_for_values_is_the_exporters_and_clusterings_rule():
    from dc_keras.clustering.wrapper import bits_for_clusters

    for count, bits in ((0, 1), (1, 1), (2, 1), (3, 2), (16, 4), (17, 5), (256, 8)):
        assert limits.bits_for_values(count) == bits == bits_for_clusters(count)
