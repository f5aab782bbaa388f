"""Block-structured pruning: block-aligned masks (both orientations, AVG and MAX, edge blocks), the sparsity
target, layer kinds, errors, save/load, strip_pruning, clustering that keeps the pattern, config and CLI."""
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.pruning.blocks import BlockLayout
from dc_keras.pruning.wrapper import PruneLowMagnitude, collect_prunable_layers, read_value


def _data(n=64, shape=(18,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, classes, n)


def _aligned(mask, block_size):
    """True when every (r, c) block of the last two axes of `mask`, aligned at 0, is all 0 or all 1."""
    mask = np.asarray(mask)
    r, c = block_size
    matrices = mask.reshape((-1,) + mask.shape[-2:])
    for matrix in matrices:
        for i in range(0, matrix.shape[0], r):
            for j in range(0, matrix.shape[1], c):
                block = matrix[i:i + r, j:j + c]
                if not (np.all(block == block.flat[0])):
                    return False
    return True


def _prune_and_fit(model, block_size, pooling="AVG", sparsity=0.75, epochs=1, **kwargs):
    keras.utils.set_random_seed(0)
    x, y = _data(shape=model.input_shape[1:])
    pruned = dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(sparsity, 0, frequency=1),
                                          block_size=block_size, block_pooling_type=pooling, **kwargs)
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[UpdatePruningStep()])
    return pruned


def _dense_model(inputs=18, units=13):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, name="fc1"),
                             keras.layers.Dense(3, name="fc2")])


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
@pytest.mark.parametrize("block_size", [(4, 1), (1, 4), (3, 2)])
def test_dense_masks_are_block_aligned_and_meet_the_target(block_size, pooling):
    # 18 x 13 kernel: neither dimension is a multiple of 4, so edge blocks exist in both directions
    pruned = _prune_and_fit(_dense_model(), block_size, pooling, sparsity=0.75)
    for wrapper in collect_prunable_layers(pruned):
        weight, mask, _ = wrapper.pruning_vars[0]
        mask = read_value(mask)
        assert _aligned(mask, block_size), (wrapper.name, mask)
        n = mask.size
        budget = round(n * 0.25)
        kept = int(mask.sum())
        # sparsity met, overshooting by less than one block (at least one block kept)
        assert kept <= max(budget, block_size[0] * block_size[1])
        assert kept > budget - block_size[0] * block_size[1]
        assert np.all(weight.numpy()[mask == 0] == 0)


def test_orientation_is_tfmots_rows_are_inputs():
    # (4, 1): four consecutive inputs (kernel rows) of one output share a mask; (1, 4): four outputs
    kernel = np.zeros((8, 8), np.float32)
    kernel[0:4, 2] = 1.0      # a column run: 4 inputs of output 2
    kernel[5, 4:8] = 1.0      # a row run: input 5 feeding outputs 4..7
    for block_size, expected in (((4, 1), (slice(0, 4), 2)), ((1, 4), (5, slice(4, 8)))):
        layout = BlockLayout(kernel.shape, block_size)
        _, mask = dc_keras.ConstantSparsity(1 - 4 / 64, 0).compute_block_mask(0, kernel, layout)
        wanted = np.zeros_like(kernel)
        wanted[expected] = 1
        np.testing.assert_array_equal(mask.numpy(), wanted)


def test_matches_tfmot_block_masks_on_a_divisible_kernel():
    pruning_impl = pytest.importorskip(
        "tensorflow_model_optimization.python.core.sparsity.keras.pruning_impl")
    tfmot_schedule = pytest.importorskip("tensorflow_model_optimization.python.core.sparsity.keras.pruning_schedule")
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(16, 12)).astype(np.float32)
    for block_size in ((4, 1), (1, 4), (2, 3)):
        for pooling in ("AVG", "MAX"):
            weight = tf.Variable(kernel)
            impl = pruning_impl.Pruning(lambda: tf.constant(1, tf.int64), [(weight, tf.Variable(tf.ones_like(kernel)),
                                                                             tf.Variable(0.0))],
                                        tfmot_schedule.ConstantSparsity(0.5, 0), block_size, pooling)
            _, theirs = impl._maybe_update_block_mask(weight)
            layout = BlockLayout(kernel.shape, block_size, pooling)
            _, ours = dc_keras.ConstantSparsity(0.5, 0).compute_block_mask(1, kernel, layout)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=f"{block_size} {pooling}")


def test_edge_blocks_are_scored_over_their_real_weights():
    # rows 0..3 form a full block of 1.0s, row 4 an edge block of one weight 1.5: its mean is 1.5, not 1.5 / 4
    kernel = np.array([[1.0], [1.0], [1.0], [1.0], [1.5]], np.float32)
    layout = BlockLayout(kernel.shape, (4, 1), "AVG")
    _, mask = dc_keras.ConstantSparsity(0.8, 0).compute_block_mask(0, kernel, layout)
    np.testing.assert_array_equal(mask.numpy()[:, 0], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(layout.pool(kernel).numpy(), [1.0, 1.5])


def test_max_and_avg_pooling_choose_different_blocks():
    kernel = np.array([10, 0, 0, 0, 3, 3, 3, 3], np.float32).reshape(8, 1)  # block 0: max 10, mean 2.5; block 1: 3
    masks = {}
    for pooling in ("AVG", "MAX"):
        _, mask = dc_keras.ConstantSparsity(0.5, 0).compute_block_mask(0, kernel, BlockLayout((8, 1), (4, 1), pooling))
        masks[pooling] = mask.numpy()[:, 0]
    np.testing.assert_array_equal(masks["AVG"], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(masks["MAX"], [1, 1, 1, 1, 0, 0, 0, 0])


def test_conv2d_blocks_span_input_and_output_channels_at_each_tap():
    model = keras.Sequential([keras.Input((6, 6, 8)), keras.layers.Conv2D(6, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="out")])
    pruned = _prune_and_fit(model, (4, 1), sparsity=0.5, per_layer={"out": None})
    (wrapper,) = collect_prunable_layers(pruned)
    mask = read_value(wrapper.pruning_vars[0][1])
    assert mask.shape == (3, 3, 8, 6)
    assert _aligned(mask, (4, 1))
    assert mask.sum() == 3 * 3 * 8 * 6 // 2


def test_sensitivity_threshold_prunes_whole_blocks():
    pruned = _prune_and_fit(_dense_model(), (1, 4), sparsity=0.5)  # warms up the weights
    kernel = pruned.layers[0].pruning_vars[0][0].numpy()
    rule = dc_keras.SensitivityThreshold(0.8)
    threshold, mask = rule.compute_block_mask(0, kernel, BlockLayout(kernel.shape, (1, 4)))
    assert _aligned(mask.numpy(), (1, 4))
    assert 0 < mask.numpy().sum() < mask.numpy().size
    np.testing.assert_allclose(float(threshold), 0.8 * np.std(kernel), rtol=1e-5)


@pytest.mark.parametrize("block_size, message", [
    ((0, 1), ">= 1"), ((4,), "2 entries"), ((4, 1, 1), "2 entries"), ((1.5, 1), "integers"),
    ((True, 1), "integers"), ("16x1", "pair of positive integers"), (16, "pair of positive integers"),
])
def test_bad_block_size_is_a_clear_error(block_size, message):
    with pytest.raises(ValueError, match=message):
        dc_keras.prune_low_magnitude(_dense_model(), block_size=block_size)
    with pytest.raises(ValueError, match=message):
        PruneLowMagnitude(keras.layers.Dense(4), block_size=block_size)


def test_bad_pooling_is_rejected():
    with pytest.raises(ValueError, match="'AVG' or 'MAX'"):
        dc_keras.prune_low_magnitude(_dense_model(), block_size=(4, 1), block_pooling_type="MIN")


@pytest.mark.parametrize("layer", [keras.layers.DepthwiseConv2D(3), keras.layers.Embedding(10, 4),
                                   keras.layers.Conv2DTranspose(4, 3)])
def test_layers_without_blocks_reject_them_directly(layer):
    with pytest.raises(ValueError, match="cannot be block-pruned"):
        dc_keras.prune_low_magnitude(layer, block_size=(4, 1))
    assert isinstance(dc_keras.prune_low_magnitude(layer, block_size=(1, 1)), PruneLowMagnitude)


def test_layers_without_blocks_in_a_model_are_pruned_unstructured_with_a_notice(caplog):
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.DepthwiseConv2D(3, name="dw"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
    with caplog.at_level(logging.WARNING, logger="dc_keras"):
        pruned = dc_keras.prune_low_magnitude(model, block_size=(4, 1))
    sizes = {w.layer.name: w.block_size for w in collect_prunable_layers(pruned)}
    assert sizes == {"dw": (1, 1), "out": (4, 1)}
    assert "pruned unstructured" in caplog.text and "dw (DepthwiseConv2D)" in caplog.text


def test_block_size_per_layer_mapping():
    pruned = dc_keras.prune_low_magnitude(_dense_model(), block_size={"fc1": (1, 8)})
    assert {w.layer.name: w.block_size for w in collect_prunable_layers(pruned)} == {"fc1": (1, 8), "fc2": (1, 1)}
    with pytest.raises(ValueError, match="block_size names layers that are not in the model: \\['nope'\\]"):
        dc_keras.prune_low_magnitude(_dense_model(), block_size={"nope": (4, 1)})


def test_rank_one_custom_weights_reject_blocks_when_built():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), name="w")

        def call(self, x):
            return x * self.w

        def get_prunable_weights(self):
            return [self.w]

    wrapper = PruneLowMagnitude(Scale(name="scale"), block_size=(4, 1))
    with pytest.raises(ValueError, match="rank >= 2"):
        wrapper.build((None, 8))


def test_schedule_with_its_own_mask_rule_needs_a_block_rule():
    class Halves(dc_keras.ConstantSparsity):
        def compute_mask(self, step, weight):
            return tf.constant(0.0), tf.ones_like(weight)

    with pytest.raises(ValueError, match="compute_block_mask"):
        PruneLowMagnitude(keras.layers.Dense(4), pruning_schedule=Halves(0.5, 0), block_size=(4, 1))
    PruneLowMagnitude(keras.layers.Dense(4), pruning_schedule=Halves(0.5, 0))  # unstructured: fine


def test_save_load_keeps_block_settings_and_masks(tmp_path):
    pruned = _prune_and_fit(_dense_model(), (1, 4), "MAX")
    path = str(tmp_path / "blocks.keras")
    pruned.save(path)
    restored = keras.models.load_model(path)
    for before, after in zip(collect_prunable_layers(pruned), collect_prunable_layers(restored)):
        assert after.block_size == (1, 4) and after.block_pooling_type == "MAX"
        np.testing.assert_array_equal(read_value(after.pruning_vars[0][1]), read_value(before.pruning_vars[0][1]))
    # resumed training keeps recomputing block masks
    x, y = _data()
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    for wrapper in collect_prunable_layers(restored):
        assert _aligned(read_value(wrapper.pruning_vars[0][1]), (1, 4))
    config = PruneLowMagnitude(keras.layers.Dense(4), block_size=(8, 1)).get_config()
    assert config["block_size"] == [8, 1] and config["block_pooling_type"] == "AVG"
    assert PruneLowMagnitude.from_config(config).block_size == (8, 1)


def test_strip_and_cluster_keep_the_block_pattern():
    pruned = _prune_and_fit(_dense_model(40, 24), (4, 1), sparsity=0.75, epochs=2)
    stripped = dc_keras.strip_pruning(pruned)
    kernel = stripped.get_layer("fc1").kernel.numpy()
    kept = read_value(collect_prunable_layers(pruned)[0].pruning_vars[0][1]) != 0
    np.testing.assert_array_equal(kernel != 0, kept)  # random data: no kept weight is exactly zero
    assert _aligned(kept, (4, 1))

    x, y = _data(shape=(40,))
    clustered = dc_keras.cluster_weights(stripped, bits=2, preserve_sparsity=True, seed=0)
    clustered.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clustered.fit(x, y, batch_size=16, epochs=2, verbose=0)
    final = dc_keras.strip_clustering(clustered).get_layer("fc1").kernel.numpy()
    assert np.all(final[~kept] == 0.0)                      # pruned blocks exactly zero, bit for bit
    assert np.all(kept[final != 0])                          # nothing outside the kept blocks
    assert len(np.unique(final[kept])) <= 4                  # kept weights take the 2-bit codebook's values


# ---------------------------------------------------------------------------------------------- pipeline


def test_config_block_size_validation_and_json_round_trip():
    from dc_keras.pipeline import CompressionConfig

    config = CompressionConfig(block_size=[16, 1])
    assert config.block_size == (16, 1)
    assert CompressionConfig.from_json(config.to_json()) == config
    per_layer = CompressionConfig(block_size={"ip1": [1, 8], "conv": (4, 1)})
    assert per_layer.block_size == {"ip1": (1, 8), "conv": (4, 1)}
    assert CompressionConfig.from_json(per_layer.to_json()) == per_layer
    for bad, message in (((0, 1), ">= 1"), ((16,), "2 entries"), ("16x1", "pair of positive integers"),
                         ({"ip1": (2.0, 1)}, "block_size\\['ip1'\\] entries must be integers"),
                         ({3: (4, 1)}, "keys must be layer names")):
        with pytest.raises(ValueError, match="CompressionConfig: .*" + message):
            CompressionConfig(block_size=bad)


def _mixed_model():
    return keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(8, 3, name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(12, name="fc1"),
                             keras.layers.Dense(3, name="fc2")])


def test_a_single_block_size_applies_to_dense_layers_but_the_classifier():
    from dc_keras.pipeline import CompressionConfig, compressible_layers
    from dc_keras.pipeline.config import block_sizes

    layers = compressible_layers(_mixed_model())
    assert block_sizes(CompressionConfig(block_size=(4, 1)), layers) == {"fc1": (4, 1)}
    assert block_sizes(CompressionConfig(block_size={"fc2": (4, 1)}), layers) == {"fc2": (4, 1)}
    assert block_sizes(CompressionConfig(block_size={"conv": (2, 2)}), layers) == {"conv": (2, 2)}
    assert block_sizes(CompressionConfig(), layers) == {}


@pytest.mark.parametrize("prune_epochs", [0, 1])
def test_pipeline_prunes_dense_kernels_in_blocks(prune_epochs):
    from dc_keras.pipeline import CompressionConfig, stages

    keras.utils.set_random_seed(0)
    x, y = _data(n=64, shape=(6, 6, 4))
    data = ((x, y), (x[:16], y[:16]))
    config = CompressionConfig(sparsity=0.75, block_size={"fc1": (4, 1), "fc2": (4, 1)}, prune_epochs=prune_epochs,
                               prune_iterations=1, epochs=0, batch_size=16, validation_fraction=0.0)
    pruned, _ = stages.prune(_mixed_model(), data, config)
    for name in ("fc1", "fc2"):
        kernel = pruned.get_layer(name).kernel.numpy()
        assert _aligned(kernel != 0, (4, 1)), name
        assert 0.75 <= np.mean(kernel == 0) < 0.75 + 4 / kernel.size + 1 / kernel.size, name
    assert not _aligned(pruned.get_layer("fc1").kernel.numpy() != 0, (8, 1))  # 4x1 blocks, not larger
    conv = pruned.get_layer("conv").kernel.numpy()
    assert abs(np.mean(conv == 0) - 0.75) < 0.01 and not _aligned(conv != 0, (4, 1))  # unstructured


def test_config_block_size_naming_an_unknown_layer_is_rejected():
    from dc_keras.pipeline import CompressionConfig
    from dc_keras.validation import check_layer_names

    with pytest.raises(ValueError, match="config.block_size names layers .*\\['nope'\\]"):
        check_layer_names(_mixed_model(), CompressionConfig(block_size={"nope": (4, 1)}))


def test_cli_block_size_flag():
    from absl import flags

    from dc_keras.cli import compress

    def parsed(*argv):
        fv = compress.define_flags(flags.FlagValues())
        fv(["dc-compress", *argv])
        return fv

    assert compress.build_config(parsed("--block_size=16x1"), pretrained=True).block_size == (16, 1)
    assert compress.build_config(parsed("--block_size=1X8"), pretrained=True).block_size == (1, 8)
    assert compress.build_config(parsed(), pretrained=True).block_size is None
    for bad, message in (("16,1", "must be RxC"), ("16x", "must be RxC"), ("-1x1", "must be RxC"),
                         ("0x4", "entries must be >= 1"), ("4x4x1", "must be RxC")):
        with pytest.raises(compress.InputError, match="--block_size " + message):
            compress.build_config(parsed(f"--block_size={bad}"), pretrained=True)
    assert "16x1" in parsed()["block_size"].help
