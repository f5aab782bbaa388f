"""Tests of dc-compress (dc_keras.cli.compress) on tiny synthetic models and .npz data."""
import json
import os

import numpy as np
import pytest

import keras
from absl import flags

from dc_keras.cli import compress


def _flags(*argv):
    """A fresh FlagValues with dc-compress's flags, parsed from argv (no clash with the global FLAGS)."""
    fv = compress.define_flags(flags.FlagValues())
    fv(["dc-compress", *argv])
    return fv


def _save_model(path, layers):
    model = keras.Sequential([keras.Input((16,)), *layers], name="tiny")
    model.save(str(path))
    return str(path)


def _dense_model(path):
    return _save_model(path, [keras.layers.Dense(64, activation="relu", name="fc1"), keras.layers.Dense(3, name="fc2")])


def _npz(path, n_train=300, n_test=90, features=16, **override):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, features)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int64)
    arrays = {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}
    arrays.update(override)
    np.savez(str(path), **arrays)
    return str(path)


FAST = ["--prune_epochs=1", "--prune_iterations=1", "--cluster_epochs=1", "--batch_size=32",
        "--verbosity_level=0"]


def _assert_failed(fv, capsys, tmp_path, message):
    assert compress.compress(fv) == 1
    err = capsys.readouterr().err
    assert "dc-compress: error" in err or "dc-compress: failed" in err
    assert message in err
    assert not os.path.exists(tmp_path / "out")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".out")]  # no staging leftovers


def test_missing_npz_keys(tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(str(data), x_train=np.zeros((4, 16)), y_train=np.zeros(4))
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={data}", f"--output_dir={tmp_path / 'out'}")
    _assert_failed(fv, capsys, tmp_path, "missing arrays ['x_test', 'y_test']")


@pytest.mark.parametrize("override, message", [
    ({"x_train": np.zeros((300, 5), np.float32), "x_test": np.zeros((90, 5), np.float32)}, "expects (16,)"),
    ({"y_train": np.zeros(299, np.int64)}, "x_train has 300 examples but y_train has 299"),
    ({"y_train": np.full(300, 7, np.int64)}, "8 classes but model 'tiny' has 3 outputs"),
    ({"x_train": np.array(["a"] * 300)}, "numeric"),
])
def test_bad_data_shapes_and_types(tmp_path, capsys, override, message):
    data = _npz(tmp_path / "d.npz", **override)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={data}", f"--output_dir={tmp_path / 'out'}")
    _assert_failed(fv, capsys, tmp_path, message)


def test_model_without_compressible_layers(tmp_path, capsys):
    model = _save_model(tmp_path / "m.keras", [keras.layers.ReLU()])
    fv = _flags(f"--model={model}", f"--data={_npz(tmp_path / 'd.npz')}", f"--output_dir={tmp_path / 'out'}")
    _assert_failed(fv, capsys, tmp_path, "no compressible layers")


@pytest.mark.parametrize("argv, message", [
    (["--model=nonexistent.keras"], "no such file"),
    (["--data=missing.npz"], "--data missing.npz: no such file"),
    (["--sparsity=0.5", "--quality=1.0"], "not both"),
    (["--sparsity=1.5"], "sparsity must be in [0, 1)"),
    (["--budget=-1"], "--budget must be >= 0"),
    (["--config=missing.json"], "--config missing.json: no such file"),
])
def test_bad_flags(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    model = _dense_model(tmp_path / "m.keras")
    data = _npz(tmp_path / "d.npz")
    base = [f"--model={model}", f"--data={data}", f"--output_dir={tmp_path / 'out'}"]
    fv = _flags(*base, *argv)
    _assert_failed(fv, capsys, tmp_path, message)


def test_bad_config_file(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text('{"spasity": 0.9}')
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--config={config}", f"--output_dir={tmp_path / 'out'}")
    _assert_failed(fv, capsys, tmp_path, "unknown keys ['spasity']")


def test_unmeetable_budget_writes_nothing(tmp_path, capsys, monkeypatch):
    from dc_keras import sensitivity

    real = sensitivity.sensitivity_analysis

    def nothing_fits(*args, **kwargs):
        # the real analysis, then a budget no layer meets (a tiny model's accuracy on few examples is too
        # coarse to make one fail reliably)
        result = real(*args, **kwargs)
        result.proposal = {name: 0.0 for name in result.proposal}
        return result

    monkeypatch.setattr(sensitivity, "sensitivity_analysis", nothing_fits)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--output_dir={tmp_path / 'out'}", "--budget=0", *FAST)
    _assert_failed(fv, capsys, tmp_path, "cannot be met")


def test_build_config_from_flags_and_file(tmp_path):
    from dc_keras.pipeline import CompressionConfig

    config_path = tmp_path / "c.json"
    CompressionConfig(bits=4, cluster_epochs=7).save(str(config_path))
    fv = _flags(f"--config={config_path}", "--quality=0.7", "--prune_epochs=2")
    config = compress.build_config(fv, pretrained=True)
    assert config.bits == 4 and config.cluster_epochs == 7          # from the file
    assert config.quality == 0.7 and config.sparsity is None         # flags override
    assert config.epochs == 0                                        # a given model is not retrained densely
    assert config.prune_epochs == 2 and config.prune_iterations == 2  # fewer epochs than iterations: one each
    assert compress.build_config(_flags("--epochs=3"), pretrained=True).epochs == 3


def test_fewer_prune_epochs_than_a_presets_iterations_take_one_iteration_each():
    preset = compress.BUILTIN_PRESETS["lenet5"]
    assert preset["prune_iterations"] > 2
    config = compress.build_config(_flags("--model=lenet5", "--prune_epochs=2"), pretrained=False)
    assert config.prune_epochs == 2 and config.prune_iterations == 2
    config = compress.build_config(_flags("--model=lenet5"), pretrained=False)
    assert (config.prune_epochs, config.prune_iterations) == (preset["prune_epochs"], preset["prune_iterations"])
    with pytest.raises(Exception, match="prune_iterations"):
        compress.build_config(_flags("--model=lenet5", "--prune_epochs=2", "--prune_iterations=4"),
                              pretrained=False)


def test_end_to_end_on_tiny_model(tmp_path, capsys):
    out = tmp_path / "out"
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--output_dir={out}", "--epochs=3", "--sparsity=0.8", "--bits=4", *FAST)
    assert compress.compress(fv) == 0
    files = set(os.listdir(out))
    assert {"dense.tflite", "dense_int8.tflite", "compressed.tflite", "report.txt", "report.json",
            "config.json"} <= files
    assert {"weight_histograms.png", "codebook_centroids.png"} <= files
    report = json.loads((out / "report.json").read_text())
    # the int8 baseline dc-benchmark compares against (int8 weights: smaller than the float file)
    assert report["files"]["dense_int8.tflite"] < report["files"]["dense.tflite"]
    assert report["tflite_accuracy"]["dense_int8.tflite"] == pytest.approx(report["accuracy"]["dense"], abs=0.05)
    assert report["model"].endswith("m.keras") and report["data"].endswith("d.npz")
    assert report["config"]["sparsity"] == 0.8 and report["config"]["bits"] == 4
    rows = {row["layer"]: row for row in report["table2"]}
    assert "fc1" in rows and "total" in rows
    assert rows["fc1"]["weights"] == 16 * 64
    assert rows["fc1"]["weights_pct_p"] == pytest.approx(0.2, abs=0.01)
    assert rows["fc1"]["weight_bits_pq"] <= 4
    assert report["files"]["compressed.tflite"] < report["files"]["dense.tflite"]
    # the .tflite runs (through the dc delegate) and agrees with its Keras model
    assert report["tflite_accuracy"]["compressed.tflite"] == pytest.approx(report["accuracy"]["clustered"], abs=0.012)
    assert "P+Q+H" in (out / "report.txt").read_text()
    assert json.loads((out / "config.json").read_text())["sparsity"] == 0.8
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "m.keras", "out"]


def test_main_rejects_positional_arguments():
    from absl import app

    with pytest.raises(app.UsageError):
        compress.main(["dc-compress", "extra"])


def test_builtin_models_default_to_their_presets_and_flags_override_them():
    config = compress.build_config(_flags("--model=lenet300"), pretrained=False)
    preset = compress.BUILTIN_PRESETS["lenet300"]
    assert config.sparsity == preset["sparsity"] and config.bits == preset["bits"]
    assert config.prune_epochs == preset["prune_epochs"] and config.cluster_epochs == preset["cluster_epochs"]
    overridden = compress.build_config(_flags("--model=lenet300", "--bits=6", "--prune_epochs=2"), pretrained=False)
    assert overridden.bits == 6 and overridden.prune_epochs == 2 and overridden.sparsity == preset["sparsity"]
    # every stage selects its model on the held-out split, so the presets keep it
    assert config.validation_fraction == 0.1
    assert compress.build_config(_flags("--model=lenet300", "--validation_fraction=0.2"),
                                 pretrained=False).validation_fraction == 0.2
    assert compress.build_config(_flags("--model=lenet5", "--sparsity=0.8"), pretrained=False).sparsity == 0.8
    # with a budget, the sensitivity analysis chooses; the config keeps the generic default until then
    assert compress.build_config(_flags("--model=lenet300", "--budget=0.01"), pretrained=False).sparsity == 0.9


def test_a_presets_regrowth_gives_way_to_a_one_epoch_retraining_but_an_explicit_flag_does_not():
    assert compress.build_config(_flags("--model=lenet300"), pretrained=False).regrowth
    quick = compress.build_config(_flags("--model=lenet300", "--prune_epochs=1"), pretrained=False)
    assert quick.prune_iterations == 1 and not quick.regrowth
    assert compress.build_config(_flags("--model=lenet300", "--prune_epochs=2"), pretrained=False).regrowth
    with pytest.raises(compress.InputError, match="regrowth"):
        compress.build_config(_flags("--model=lenet300", "--prune_epochs=1", "--regrowth"), pretrained=False)


def _with_nan(n, features=16, at=(5, 3)):
    x = np.random.default_rng(1).normal(size=(n, features)).astype(np.float32)
    x[at] = np.nan
    return x


@pytest.mark.parametrize("override, argv, message", [
    ({"x_test": _with_nan(90)}, [], "data: x_test holds 1 NaN value(s) (the first in example 5)"),
    ({"x_train": np.where(np.eye(300, 16, dtype=bool), np.inf, 0).astype(np.float32)}, [],
     "data: x_train holds 16 infinite value(s)"),
    ({"y_test": np.full(90, 7, np.int64)}, [], "y_test has class id 7: labels name 8 classes but model 'tiny' has 3"),
    ({"y_test": np.zeros((90, 2, 2), np.int64)}, [], "y_test must have shape (n,) of class ids"),
    ({"x_test": np.zeros((0, 16), np.float32), "y_test": np.zeros(0, np.int64)}, [], "data: x_test is empty"),
    ({"x_test": np.zeros((90, 5), np.float32)}, [], "x_train examples have shape (16,) but x_test examples (5,)"),
    ({}, ["--bits=9"], "--bits must be an integer in 1..8"),
    ({}, ["--bits=0"], "--bits must be an integer in 1..8, got 0"),
    ({}, ["--index_bits=1"], "--index_bits must be an integer in 2..8"),
    ({}, ["--index_bits=9"], "--index_bits must be an integer in 2..8"),
    ({}, ["--sparsity=-0.1"], "--sparsity must be in [0, 1)"),
])
def test_bad_input_is_rejected_before_training(tmp_path, capsys, override, argv, message):
    data = _npz(tmp_path / "d.npz", **override)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={data}", f"--output_dir={tmp_path / 'out'}",
                "--epochs=2", "--prune_epochs=1", "--prune_iterations=1", "--cluster_epochs=1", *argv)
    assert compress.compress(fv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("dc-compress: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert "Epoch" not in captured.out and "stage" not in captured.out  # nothing trained
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "m.keras"]


def test_config_file_naming_unknown_layers_is_rejected_before_training(tmp_path, capsys):
    from dc_keras.pipeline import CompressionConfig

    config = tmp_path / "c.json"
    CompressionConfig(bits={"fc1": 4, "fc7": 3}).save(str(config))
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--config={config}", f"--output_dir={tmp_path / 'out'}", "--epochs=2")
    assert compress.compress(fv) == 1
    captured = capsys.readouterr()
    assert "config.bits names layers that are not compressible layers of the model: ['fc7']" in captured.err
    assert "Epoch" not in captured.out


def test_cli_rejects_nan_test_pixels_in_one_line_within_seconds(tmp_path):
    import subprocess
    import sys
    import time

    data = _npz(tmp_path / "d.npz", x_test=_with_nan(90))
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "dc_keras.cli.compress", f"--model={_dense_model(tmp_path / 'm.keras')}",
                          f"--data={data}", f"--output_dir={tmp_path / 'out'}", "--epochs=50"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seconds = time.monotonic() - start
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("dc-compress")]
    assert errors == ["dc-compress: error: data: x_test holds 1 NaN value(s) (the first in example 5); replace or "
                      "drop those examples"]
    assert "Traceback" not in run.stderr and "Epoch" not in run.stdout
    assert seconds < 120  # 50 epochs would not fit: the check came before training (it takes seconds)
    assert not (tmp_path / "out").exists()


def test_garbage_model_file_is_a_one_line_error(tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not a zip archive\n\nat all")
    fv = _flags(f"--model={model}", f"--data={_npz(tmp_path / 'd.npz')}", f"--output_dir={tmp_path / 'out'}")
    assert compress.compress(fv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dc-compress: error: --model {model}: cannot load it as a Keras model") and err.count("\n") == 1


def _mixed_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)                   # first layer: capped at 50%
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)                    # depthwise (below every cap)
    x = keras.layers.Conv2D(64, 3, name="conv")(x)                       # convolution
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, name="fc")(x)                            # fully connected
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))   # last layer: capped at 75%


def test_model_without_preset_gets_sparsity_by_layer_kind(capsys):
    from dc_keras import presets

    config = compress.build_config(_flags("--model=my.keras"), pretrained=True, model=_mixed_model())
    assert config.sparsity == {"stem": presets.FIRST_LAYER_CAP, "dw": presets.DEFAULT_SPARSITY_BY_KIND["depthwise"],
                               "conv": presets.DEFAULT_SPARSITY_BY_KIND["conv"],
                               "fc": presets.DEFAULT_SPARSITY_BY_KIND["fc"], "out": presets.LAST_LAYER_CAP}
    assert config.quality is None
    out = capsys.readouterr().out
    assert "no preset for this model" in out
    assert "stem: 50% (conv 65%, first layer: at most 50%)" in out
    assert "out: 75% (fc 90%, last layer: at most 75%)" in out


@pytest.mark.parametrize("given", ["--sparsity=0.6", "--quality=0.5", "--budget=0.02"])
def test_explicit_settings_replace_the_layer_kind_defaults(given, capsys):
    config = compress.build_config(_flags("--model=my.keras", given), pretrained=True, model=_mixed_model())
    assert not isinstance(config.sparsity, dict)
    assert "no preset for this model" not in capsys.readouterr().out
