"""Tests of dc_keras.pipeline: configuration, data checks, atomic outputs, stage orchestration, and the
prune / cluster stages on tiny synthetic models (no dataset needed)."""
import json
import os

import numpy as np
import pytest
from tiny_pipeline import tiny_data, tiny_model

import keras

from dc_keras import pipeline
from dc_keras.pipeline import CompressionConfig, DeepCompression, StagingDirectory


# ---------------------------------------------------------------------------------------------- fixtures



def _fast_config(**changes):
    base = dict(epochs=2, prune_epochs=2, prune_iterations=2, cluster_epochs=1, batch_size=32,
                validation_fraction=0.25)
    base.update(changes)
    return CompressionConfig(**base)


# ---------------------------------------------------------------------------------------------- config

def test_config_json_round_trip_with_per_layer_values():
    config = CompressionConfig(sparsity={"ip1": 0.92, "ip3": 0.74}, bits={"ip1": 4}, index_bits=5,
                               epochs=3, learning_rate=2e-3)
    text = config.to_json()
    assert json.loads(text)["sparsity"] == {"ip1": 0.92, "ip3": 0.74}
    assert CompressionConfig.from_json(text) == config


def test_config_save_load(tmp_path):
    config = CompressionConfig(quality={"fc1": 0.8}, sparsity=None)
    path = tmp_path / "sub" / "config.json"
    config.save(str(path))
    assert CompressionConfig.load(str(path)) == config
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left behind


@pytest.mark.parametrize("changes, message", [
    ({"sparsity": 0.5, "quality": 1.0}, "not both"),
    ({"sparsity": None}, "one of sparsity or quality"),
    ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
    ({"sparsity": {"fc1": -0.1}}, r"sparsity\['fc1'\]"),
    ({"sparsity": {3: 0.5}}, "layer names"),
    ({"sparsity": None, "quality": 0}, "quality must be"),
    ({"bits": 17}, "bits must be"),
    ({"bits": 9}, r"bits must be an integer in 1\.\.8.*got 9"),
    ({"bits": 0}, r"bits must be an integer in 1\.\.8, got 0 \(0 for every layer would compress nothing"),
    ({"bits": {"fc1": 9}}, r"bits\['fc1'\] must be 0 \(not clustered\) or an integer in 1\.\.8"),
    ({"bits": 4.5}, "bits must be"),
    ({"index_bits": 0}, "index_bits must be"),
    ({"index_bits": 1}, r"index_bits must be an integer in 2\.\.8.*got 1"),
    ({"index_bits": 9}, r"index_bits must be an integer in 2\.\.8.*got 9"),
    ({"index_bits": {"fc1": 1}}, r"index_bits\['fc1'\] must be an integer in 2\.\.8"),
    ({"sparsity": float("nan")}, r"sparsity must be in \[0, 1\)"),
    ({"epochs": -1}, "epochs must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"prune_iterations": 4, "prune_epochs": 2}, "prune_epochs"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"centroid_init": "forgy"}, "centroid_init"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"epochs": True}, "epochs must be"),
    ({"patience": 0}, "patience must be an integer >= 1"),
    ({"distill_weight": 1.5}, r"distill_weight must be in \[0, 1\]"),
    ({"distill_temperature": 0.0}, "distill_temperature must be a number > 0"),
    ({"max_drop": float("nan")}, "max_drop must be a finite number"),
])
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**changes)


def test_config_from_json_rejects_unknown_keys_and_bad_json():
    with pytest.raises(ValueError, match="unknown keys.*spasity"):
        CompressionConfig.from_json('{"spasity": 0.9}')
    with pytest.raises(ValueError, match="not valid JSON"):
        CompressionConfig.from_json("{")
    with pytest.raises(ValueError, match="JSON object"):
        CompressionConfig.from_json("[1]")


def test_per_layer_value_and_ramp():
    assert pipeline.per_layer_value(0.9, "x") == 0.9
    assert pipeline.per_layer_value({"a": 0.5}, "a") == 0.5
    assert pipeline.per_layer_value({"a": 0.5}, "b", 0.0) == 0.0
    assert pipeline.per_layer_value(None, "b", 7) == 7
    steps = [pipeline.ramp(i, 3) for i in range(4)]
    assert steps[0] == 0.0 and steps[-1] == 1.0
    assert all(a < b for a, b in zip(steps, steps[1:]))
    # bigger steps first (cubic, like tfmot's PolynomialDecay)
    assert steps[1] - steps[0] > steps[2] - steps[1] > steps[3] - steps[2]


# ---------------------------------------------------------------------------------------------- data

def test_validate_data_accepts_and_normalises():
    (x, y), (xt, yt) = tiny_data()
    (x2, y2), _ = pipeline.validate_data(((x, y[:, None]), (xt, yt)))
    assert y2.shape == (len(x),)
    one_hot = np.eye(3)[y]
    (_, y3), _ = pipeline.validate_data(((x, one_hot), (xt, np.eye(3)[yt])))
    assert y3.shape == (len(x), 3)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d[0],), "must be"),
    (lambda d: ((d[0][0], d[0][1][:-1]), d[1]), "x_train has 240 examples but y_train has 239"),
    (lambda d: ((d[0][0], d[0][1]), (d[1][0][:, :4], d[1][1])), "x_train examples have shape"),
    (lambda d: ((d[0][0].astype(str), d[0][1]), d[1]), "x_train must be numeric"),
    (lambda d: ((d[0][0], d[0][1] + 0.5), d[1]), "integer class ids"),
    (lambda d: ((d[0][0], -d[0][1] - 1), d[1]), "negative"),
    (lambda d: ((d[0][0], np.zeros((240, 2, 2))), d[1]), "shape"),
    (lambda d: ((d[0][0][:0], d[0][1][:0]), d[1]), "empty"),
])
def test_validate_data_rejects(mutate, message):
    with pytest.raises(ValueError, match=message):
        pipeline.validate_data(mutate(tiny_data()))


def test_check_data_fits_model():
    model = tiny_model()
    pipeline.check_data_fits_model(model, tiny_data())
    (x, y), test = tiny_data()
    with pytest.raises(ValueError, match="expects"):
        pipeline.check_data_fits_model(model, ((x[:, :5], y), test))
    with pytest.raises(ValueError, match="5 classes"):
        pipeline.check_data_fits_model(model, ((x, np.full_like(y, 4)), test))



def _with(data, split, index, value):
    """A copy of `data` with array `index` (0 x, 1 y) of split 0 (train) / 1 (test) replaced by `value`."""
    parts = [list(data[0]), list(data[1])]
    parts[split][index] = value
    return tuple(tuple(p) for p in parts)


def _nan_at(x, example):
    x = x.copy()
    x[example, 2] = np.nan
    return x


@pytest.mark.parametrize("mutate, message", [
    (lambda d: _with(d, 1, 0, _nan_at(d[1][0], 7)), r"x_test holds 1 NaN value\(s\) \(the first in example 7\)"),
    (lambda d: _with(d, 0, 0, np.where(np.arange(d[0][0].size).reshape(d[0][0].shape) == 0, np.inf, d[0][0])),
     "x_train holds 1 infinite"),
    (lambda d: _with(d, 1, 1, np.full(len(d[1][1]), np.nan)), "y_test holds 60 NaN"),
    (lambda d: _with(d, 1, 0, d[1][0][:0]), "x_test is empty"),
    (lambda d: _with(d, 0, 0, np.zeros((240, 0), np.float32)), r"x_train has shape \(240, 0\)"),
    (lambda d: _with(d, 1, 1, np.eye(4)[d[1][1]]), "y_train and y_test must both be"),
    (lambda d: (( d[0][0], np.eye(3)[d[0][1]]), (d[1][0], np.eye(4)[d[1][1]])), "3 classes but y_test rows 4"),
    (lambda d: _with(d, 1, 1, d[1][1].astype(np.complex64)), "y_test must be numeric"),
])
def test_validate_data_rejects_non_finite_empty_and_inconsistent(mutate, message):
    with pytest.raises(ValueError, match=message):
        pipeline.validate_data(mutate(tiny_data()))
    with pytest.raises(ValueError, match=message):  # the pipeline's public entry checks the same
        DeepCompression(_fast_config(), mutate(tiny_data()), verbose=0)


def test_check_data_fits_model_checks_test_labels_too():
    model = tiny_model()
    (x, y), (xt, yt) = tiny_data()
    with pytest.raises(ValueError, match="y_test has class id 3: labels name 4 classes but model 'tiny' has 3"):
        pipeline.check_data_fits_model(model, pipeline.validate_data(((x, y), (xt, np.full_like(yt, 3)))))
    with pytest.raises(ValueError, match="y_test one-hot rows have 4 columns"):
        pipeline.check_data_fits_model(model, ((x, np.eye(3)[y]), (xt, np.eye(4)[yt])))


def test_check_data_fits_model_passes_over_models_without_known_shapes():
    class Unbuilt(keras.Model):  # a subclassed model has no input_shape until it is first called
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(x)

    pipeline.check_data_fits_model(Unbuilt(), pipeline.validate_data(tiny_data()))
    inputs = keras.Input((8,))
    two_heads = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(2)(inputs)])
    pipeline.check_data_fits_model(two_heads, pipeline.validate_data(tiny_data()))


def test_run_rejects_bad_test_labels_before_training(tmp_path, capsys):
    (x, y), (xt, yt) = tiny_data()
    dc = DeepCompression(_fast_config(), ((x, y), (xt, np.full_like(yt, 5))), verbose=1)
    with pytest.raises(ValueError, match="y_test has class id 5"):
        dc.run(tiny_model(), str(tmp_path / "out"))
    assert dc.stages == {} and dc.dense_model is None  # nothing trained
    assert "Epoch" not in capsys.readouterr().out and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="y_test has class id 5"):  # stage by stage as well
        dc.train_dense(tiny_model())
    assert dc.dense_model is None


def test_run_rejects_unknown_layer_names_before_training(tmp_path):
    dc = DeepCompression(_fast_config(bits={"fc9": 4}), tiny_data(), verbose=0)
    with pytest.raises(ValueError, match=r"config.bits names layers .*\['fc9'\]"):
        dc.run(tiny_model(), str(tmp_path / "out"))
    assert dc.stages == {}


# ---------------------------------------------------------------------------------------------- files

def test_staging_directory_commit_replaces_and_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with StagingDirectory(str(final)) as staging:
        open(os.path.join(staging.path, "old.txt"), "w").write("old")
        staging.commit()
    with StagingDirectory(str(final)) as staging:
        open(os.path.join(staging.path, "new.txt"), "w").write("new")
        assert not (final / "new.txt").exists()  # nothing visible before commit
        staging.commit()
    # the earlier result's files (listed in its manifest) are replaced by the new result's
    assert sorted(os.listdir(final)) == [".dc_keras_manifest.json", "new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]

    with pytest.raises(RuntimeError):
        with StagingDirectory(str(tmp_path / "other")) as staging:
            open(os.path.join(staging.path, "half.txt"), "w").write("x")
            raise RuntimeError("stage failed")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_write_refuses_to_leave_temp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    pipeline.atomic_write(str(target), b"abc")
    assert target.read_bytes() == b"abc"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline.os, "replace", failing_replace)
    with pytest.raises(OSError):
        pipeline.atomic_write(str(target), b"new")
    assert target.read_bytes() == b"abc"
    assert os.listdir(tmp_path) == ["f.bin"]


# ---------------------------------------------------------------------------------------------- orchestration

class _FakeReport:
    stock = [{"layer": "conv1", "op": "CONV_2D", "reason": "not supported"}]
    verification = {"batch_sizes": [1], "max_rel_error": 0.0, "tolerance": 1e-5}

    def to_dict(self):
        layer = {"name": "fc1", "weights": 256, "weights_fraction": 0.1, "bits": 5, "weight_bits_pqh": 4.0,
                 "index_bits": 5, "index_bits_pqh": 3.5, "rate_pq": 0.04, "rate_pqh": 0.03}
        total = {"weights": 256, "weights_fraction": 0.1, "weight_bits_pq": 5.0, "weight_bits_pqh": 4.0,
                 "index_bits_pq": 5.0, "index_bits_pqh": 3.5, "rate_pq": 0.04, "rate_pqh": 0.025}
        return {"layers": [layer], "total": total}


def _mock_stages(monkeypatch, calls, fail_at=None):
    """Replace every stage method by a recorder that writes what the real stage would."""
    def stage(name, result_attr=None):
        def method(self, *args, **kwargs):
            calls.append(name)
            if name == fail_at:
                raise RuntimeError(f"{name} failed")
            if name == "export":
                output_dir = args[0]
                for file in ("compressed.tflite", "dense.tflite"):
                    path = os.path.join(output_dir, file)
                    pipeline.atomic_write(path, b"x" * (100 if file == "dense.tflite" else 10))
                    self.files[file] = path
                self.export_report = _FakeReport()
                return self.export_report
            if name == "verify":
                self.verification = {"compressed.tflite": {"accuracy": 0.9, "keras_accuracy": 0.9, "bytes": 10},
                                     "dense.tflite": {"accuracy": 0.91, "keras_accuracy": 0.91, "bytes": 100}}
                return self.verification
            model = tiny_model()
            if result_attr:
                setattr(self, result_attr, model)
                self.stages[result_attr.replace("_model", "")] = pipeline.StageResult(
                    result_attr.replace("_model", ""), 0.9, 0.0)
            return model
        return method

    monkeypatch.setattr(DeepCompression, "train_dense", stage("train_dense", "dense_model"))
    monkeypatch.setattr(DeepCompression, "prune", stage("prune", "pruned_model"))
    monkeypatch.setattr(DeepCompression, "cluster", stage("cluster", "clustered_model"))
    monkeypatch.setattr(DeepCompression, "export", stage("export"))
    monkeypatch.setattr(DeepCompression, "verify", stage("verify"))


def test_run_calls_stages_in_order_and_writes_all_outputs(tmp_path, monkeypatch):
    calls = []
    _mock_stages(monkeypatch, calls)
    config = _fast_config(sparsity={"fc1": 0.8})
    dc = DeepCompression(config, tiny_data(), verbose=0)
    out = tmp_path / "result"
    report = dc.run(tiny_model(), str(out))
    assert calls == ["train_dense", "prune", "cluster", "export", "verify"]
    files = sorted(os.listdir(out))
    assert {"compressed.tflite", "dense.tflite", "report.json", "report.txt", "config.json"} <= set(files)
    assert "weight_histograms.png" in files and "codebook_centroids.png" in files
    assert CompressionConfig.load(str(out / "config.json")) == config
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["files"] == {"dense.tflite": 100, "dense_int8.tflite": None, "compressed.tflite": 10, "ratio": 10.0}
    assert [row["layer"] for row in saved["table2"]] == ["fc1", "total"]
    assert saved["stock_layers"][0]["layer"] == "conv1"
    text = (out / "report.txt").read_text()
    assert "P+Q+H" in text and "fc1" in text and "total" in text and "40.0x (P+Q+H)" in text
    assert "left stock: conv1" in text
    # the paths point into the final directory, not the staging one
    assert dc.files["compressed.tflite"] == str(out / "compressed.tflite")
    assert sorted(os.listdir(tmp_path)) == ["result"]


@pytest.mark.parametrize("failing", ["prune", "cluster", "export", "verify"])
def test_run_failure_leaves_nothing_under_output_name(tmp_path, monkeypatch, failing):
    calls = []
    _mock_stages(monkeypatch, calls, fail_at=failing)
    dc = DeepCompression(_fast_config(), tiny_data(), verbose=0)
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        dc.run(tiny_model(), str(tmp_path / "result"))
    assert os.listdir(tmp_path) == []
    assert calls[-1] == failing


def test_run_failure_keeps_previous_result(tmp_path, monkeypatch):
    out = tmp_path / "result"
    _mock_stages(monkeypatch, [])
    DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    _mock_stages(monkeypatch, [], fail_at="export")
    with pytest.raises(RuntimeError):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out))
    assert os.listdir(tmp_path) == ["result"]
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_run_without_matplotlib_prints_notice(tmp_path, monkeypatch, capsys):
    _mock_stages(monkeypatch, [])
    monkeypatch.setattr(pipeline, "write_plots", lambda *args: None)
    dc = DeepCompression(_fast_config(), tiny_data(), verbose=1)
    dc.run(tiny_model(), str(tmp_path / "r"))
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not any(f.endswith(".png") for f in os.listdir(tmp_path / "r"))


def test_stages_need_data_and_models():
    dc = DeepCompression(_fast_config(), data=None, verbose=0)
    with pytest.raises(ValueError, match="needs data"):
        dc.train_dense(tiny_model())
    with pytest.raises(ValueError, match="run the previous stage"):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).prune()
    plain = keras.Sequential([keras.Input((8,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no compressible layers"):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).prune(plain)
    with pytest.raises(TypeError, match="CompressionConfig"):
        DeepCompression({"sparsity": 0.9})


def test_unknown_layer_names_in_config_rejected():
    dc = DeepCompression(_fast_config(sparsity={"nope": 0.5}), tiny_data(), verbose=0)
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        dc.prune(tiny_model())


# ---------------------------------------------------------------------------------------------- real stages

def test_train_prune_cluster_on_tiny_model():
    dc = DeepCompression(_fast_config(sparsity={"fc1": 0.75}, bits=3), tiny_data(), verbose=0)
    given = tiny_model()
    before = [w.copy() for w in given.get_weights()]
    dense = dc.train_dense(given)
    for got, want in zip(given.get_weights(), before):  # the caller's model is not modified
        np.testing.assert_array_equal(got, want)
    assert dc.stages["dense"].accuracy > 0.5

    pruned = dc.prune()
    kernels = pipeline.kernel_arrays(pruned)
    assert np.mean(kernels["fc1"] == 0) == pytest.approx(0.75, abs=1 / 256)
    assert np.mean(kernels["fc2"] == 0) == 0.0   # absent from the sparsity dict: stays dense
    assert np.mean(pipeline.kernel_arrays(dense)["fc1"] == 0) == 0.0
    assert dc.stages["pruned"].details["sparsity"]["fc1"] == pytest.approx(0.75, abs=1 / 256)

    clustered = dc.cluster()
    kernels_after = pipeline.kernel_arrays(clustered)
    for name, kernel in kernels_after.items():
        assert np.unique(kernel[kernel != 0]).size <= 2 ** 3
    # pruned zeros stay zero
    np.testing.assert_array_equal(kernels_after["fc1"] == 0, kernels["fc1"] == 0)
    assert dc.stages["clustered"].accuracy is not None


def test_prune_without_retraining_and_quality_rule():
    dc = DeepCompression(_fast_config(prune_epochs=0), tiny_data(), verbose=0)
    model = tiny_model()
    pruned = dc.prune(model)
    for kernel in pipeline.kernel_arrays(pruned).values():
        assert np.mean(kernel == 0) == pytest.approx(0.9, abs=0.01)

    dc = DeepCompression(_fast_config(prune_epochs=0, sparsity=None, quality=1.0), tiny_data(), verbose=0)
    pruned = dc.prune(model)
    for name, kernel in pipeline.kernel_arrays(pruned).items():
        original = pipeline.kernel_arrays(model)[name]
        np.testing.assert_array_equal(kernel == 0, np.abs(original) < original.std())


def test_cluster_bits_zero_skips_layer():
    dc = DeepCompression(_fast_config(bits={"fc1": 2, "fc2": 0}, cluster_epochs=0), tiny_data(), verbose=0)
    model = tiny_model()
    clustered = dc.cluster(model)
    kernels = pipeline.kernel_arrays(clustered)
    assert np.unique(kernels["fc1"]).size <= 4
    np.testing.assert_array_equal(kernels["fc2"], pipeline.kernel_arrays(model)["fc2"])  # untouched


def test_sensitivity_targets_sets_config_or_rejects_budget(monkeypatch):
    dc = DeepCompression(_fast_config(), tiny_data(), verbose=0)
    dc.dense_model = tiny_model()  # untrained is fine: a budget of 1.0 accepts any drop
    result = dc.sensitivity_targets(budget=1.0, sparsities=(0.5,))
    assert dc.config.sparsity == {"fc1": 0.5, "fc2": 0.5} == result.proposal
    assert dc.config.quality is None

    from dc_keras import sensitivity

    real = sensitivity.sensitivity_analysis

    def infeasible(*args, **kwargs):
        r = real(*args, **kwargs)
        r.proposal = {n: 0.0 for n in r.proposal}
        return r

    monkeypatch.setattr(sensitivity, "sensitivity_analysis", infeasible)
    with pytest.raises(ValueError, match="budget 0.0 cannot be met"):
        dc.sensitivity_targets(budget=0.0, sparsities=(0.5,))


def test_table2_rows_and_format_report():
    rows = pipeline.table2_rows(_FakeReport())
    assert rows[0] == {"layer": "fc1", "weights": 256, "weights_pct_p": 0.1, "weight_bits_pq": 5,
                       "weight_bits_pqh": 4.0, "index_bits_pq": 5, "index_bits_pqh": 3.5, "rate_pq": 0.04,
                       "rate_pqh": 0.03}
    assert rows[1]["layer"] == "total" and rows[1]["rate_pqh"] == 0.025
    assert pipeline.table2_rows(None) == []
    report = {"table2": rows, "stock_layers": [], "files": {"dense.tflite": None, "compressed.tflite": 5,
                                                              "ratio": None},
              "accuracy": {"dense": 0.9, "pruned": None}, "tflite_accuracy": {}, "seconds": {"dense": 1.0}}
    text = pipeline.format_report(report)
    assert "10.0%" in text and "2.50%" in text and "dense 0.9000" in text and "ratio -x" in text
