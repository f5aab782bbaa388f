"""Tests of the pipeline's model selection on a validation split, the dense baseline's epoch budget,
knowledge distillation and the accuracy budget (--max_drop, --strict, --auto), on tiny synthetic models."""
import json
import os

import numpy as np
import pytest

import keras

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.pipeline import CompressionConfig, DeepCompression, accuracy_budget, stages, training
from dc_keras.pipeline.config import dense_epoch_budget


def _model(activation=None):
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="fc2", activation=activation)], name="tiny")


def _data(n_train=300, n_test=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, 8)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _config(**changes):
    base = dict(epochs=2, prune_epochs=2, prune_iterations=2, cluster_epochs=1, batch_size=32,
                validation_fraction=0.2, sparsity={"fc1": 0.75}, bits=3)
    base.update(changes)
    return CompressionConfig(**base)


# ---------------------------------------------------------------------------------------------- split

def test_validation_split_is_a_seeded_shuffle_not_the_tail():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    y = np.repeat(np.arange(4), 25)  # ordered by class: the tail would hold class 3 only
    data = ((x, y), (x[:5], y[:5]))
    config = CompressionConfig(validation_fraction=0.2, seed=3)
    split = training.split_data(data, config)
    (fx, fy), (vx, vy) = split.fit, split.validation
    assert len(vx) == 20 and len(fx) == 80
    assert sorted(np.concatenate([fx[:, 0], vx[:, 0]]).tolist()) == list(range(100))  # disjoint, complete
    assert len(set(vy.tolist())) >= 3
    again = training.split_data(data, config)
    np.testing.assert_array_equal(again.validation[0], vx)  # the seed fixes it
    other = training.split_data(data, config.replace(seed=4))
    assert not np.array_equal(other.validation[0], vx)
    assert training.split_data(data, config.replace(validation_fraction=0.0)).validation is None


# ---------------------------------------------------------------------------------------------- selection

def test_best_epoch_restores_every_variable_of_a_pruned_model_and_stops_on_patience():
    model = dc_keras.prune_low_magnitude(_model(), pruning_schedule=dc_keras.ConstantSparsity(0.5, 0))
    model.build((None, 8))
    chooser = training._best_epoch_callback(patience=2)
    chooser.set_model(model)
    wrapper = model.layers[0]
    weight, mask, _ = wrapper.pruning_vars[0]

    def set_state(value):
        mask.assign(np.full(mask.shape, value % 2, np.float32))
        weight.assign(np.full(weight.shape, value, np.float32))

    for epoch, (value, accuracy) in enumerate([(1, 0.5), (2, 0.9), (5, 0.6), (7, 0.9)]):
        set_state(value)
        chooser.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert model.stop_training  # two epochs without improvement (a tie is no improvement)
    chooser.on_train_end()
    assert chooser.summary() == {"epochs_run": 4, "best_epoch": 2, "best_val_accuracy": 0.9}
    np.testing.assert_array_equal(weight.numpy(), 2)
    np.testing.assert_array_equal(mask.numpy(), 0)


def test_phases_step_the_learning_rate_down_from_the_best_weights():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    chooser = training._best_epoch_callback(patience=2, phases=[(3, 1e-2), (0, 5e-3), (2, 1e-3), (4, 1e-4)])
    chooser.set_model(model)
    chooser.on_train_begin()
    rates = []
    kernel = model.layers[0].kernel
    # phase 1 runs out of epochs (3); phase 3 (the zero-epoch phase is skipped) runs out of patience (2)
    for epoch, accuracy in enumerate([0.5, 0.8, 0.7, 0.6, 0.6, 0.9, 0.9, 0.9]):
        rates.append(float(model.optimizer.learning_rate.numpy()))
        kernel.assign(np.full(kernel.shape, epoch, np.float32))
        chooser.on_epoch_end(epoch, {"val_accuracy": accuracy})
        if model.stop_training:
            break
    np.testing.assert_allclose(rates, [1e-2] * 3 + [1e-3] * 2 + [1e-4] * 3, rtol=1e-6)
    assert model.stop_training and chooser.summary()["best_epoch"] == 6
    chooser.on_train_end()
    np.testing.assert_array_equal(kernel.numpy(), 5)


def test_a_new_phase_resumes_from_the_best_weights():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    chooser = training._best_epoch_callback(patience=None, phases=[(2, 1e-2), (2, 1e-3)])
    chooser.set_model(model)
    kernel = model.layers[0].kernel
    for epoch, accuracy in enumerate([0.9, 0.5]):
        kernel.assign(np.full(kernel.shape, epoch + 1, np.float32))
        chooser.on_epoch_end(epoch, {"val_accuracy": accuracy})
    np.testing.assert_array_equal(kernel.numpy(), 1)  # the second rate starts from epoch 1's weights
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


def test_the_first_phase_reports_the_weights_the_second_starts_from():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    ends = []
    chooser = training._best_epoch_callback(patience=None, phases=[(3, 1e-2), (2, 1e-3)],
                                            on_first_phase_end=lambda epoch, weights: ends.append((epoch, weights)))
    chooser.set_model(model)
    kernel = model.layers[0].kernel
    for epoch, accuracy in enumerate([0.5, 0.8, 0.7, 0.9, 0.6]):
        kernel.assign(np.full(kernel.shape, epoch + 1, np.float32))
        chooser.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert [epoch for epoch, _ in ends] == [2]  # once, with the first phase's best epoch
    index = [id(w) for w in model.weights].index(id(kernel))
    np.testing.assert_array_equal(ends[0][1][index], 2)
    assert chooser.summary()["best_epoch"] == 4  # the run as a whole still picks its best
    # training that ends within the first phase never reports it
    ends.clear()
    short = training._best_epoch_callback(patience=None, phases=[(3, 1e-2), (2, 1e-3)],
                                          on_first_phase_end=lambda epoch, weights: ends.append(epoch))
    short.set_model(model)
    for epoch in range(3 - 1):
        short.on_epoch_end(epoch, {"val_accuracy": 0.5})
    assert ends == []


@pytest.mark.parametrize("validation_fraction", [0.2, 0.0])
def test_pruning_starts_from_the_dense_model_of_the_first_learning_rate(validation_fraction):
    config = _config(epochs=2, prune_epochs=2, cluster_epochs=1, learning_rate=1e-2, prune_learning_rate=1e-3,
                     cluster_learning_rate=1e-4, patience=50, validation_fraction=validation_fraction)
    data = _data()
    snapshots = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([np.array(v) for v in self.model.get_weights()])

    dc = DeepCompression(config, data, verbose=0)
    fit = training.fit

    def recording_fit(*args, callbacks=(), **kwargs):
        return fit(*args, callbacks=[*callbacks, Record()], **kwargs)

    stages.fit, saved = recording_fit, stages.fit
    try:
        dense = dc.train_dense(_model())
    finally:
        stages.fit = saved
    start_epoch = dc.stages["dense"].details["prune_start_epoch"]
    assert start_epoch in (1, 2) if validation_fraction else start_epoch == 2
    assert dc.prune_start_model is not dense
    for got, want in zip(dc.prune_start_model.get_weights(), snapshots[start_epoch - 1]):
        np.testing.assert_array_equal(got, want)
    best_epoch = dc.stages["dense"].details["best_epoch"] or 5  # without validation the last of 5 epochs stays
    for got, want in zip(dense.get_weights(), snapshots[best_epoch - 1]):
        np.testing.assert_array_equal(got, want)
    used = []
    stages_prune = stages.prune
    stages.prune = lambda model, *args, **kwargs: (used.append(model), stages_prune(model, *args, **kwargs))[1]
    try:
        dc.prune()
    finally:
        stages.prune = stages_prune
    assert used == [dc.prune_start_model]
    assert dc.dense_model is dense  # still the baseline


def test_a_dense_training_within_one_learning_rate_prunes_from_its_result():
    dc = DeepCompression(_config(epochs=2, prune_epochs=0, cluster_epochs=0), _data(), verbose=0)
    dense = dc.train_dense(_model())
    assert dc.prune_start_model is dense and dc.stages["dense"].details["prune_start_epoch"] is None


def test_dense_training_runs_the_stages_learning_rates():
    config = _config(epochs=2, prune_epochs=2, cluster_epochs=1, learning_rate=1e-2, prune_learning_rate=1e-3,
                     cluster_learning_rate=1e-4, patience=50)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # the rate the epoch trained with
            if batch == 0:
                seen.append(float(self.model.optimizer.learning_rate.numpy()))

    model = _model()
    training.fit(model, _data(), config, 5, config.learning_rate, callbacks=[Record()],
                 phases=stages.dense_learning_phases(config))
    np.testing.assert_allclose(seen, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4], rtol=1e-6)
    seen.clear()
    training.fit(_model(), _data(), config.replace(validation_fraction=0.0), 5, config.learning_rate,
                 callbacks=[Record()], phases=stages.dense_learning_phases(config))
    np.testing.assert_allclose(seen, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4], rtol=1e-6)


def test_pruning_retraining_keeps_best_epoch_with_masks_intact():
    data = _data()
    config = _config(prune_epochs=4, prune_iterations=1)
    wrapped = dc_keras.prune_low_magnitude(_model(), per_layer={"fc1": dc_keras.ConstantSparsity(0.75, 1, -1, 10 ** 9),
                                                                "fc2": None})
    summary = training.fit(wrapped, data, config, 4, 1e-2, callbacks=[UpdatePruningStep()])
    assert 1 <= summary["best_epoch"] <= 4 and summary["epochs_run"] == 4
    validation = training.split_data(data, config).validation
    assert training.accuracy_on(wrapped, validation, config) == pytest.approx(summary["best_val_accuracy"])
    weight, mask, _ = wrapped.layers[0].pruning_vars[0]
    assert np.mean(mask.numpy() == 0) == pytest.approx(0.75, abs=1 / 256)
    assert np.all(weight.numpy()[mask.numpy() == 0] == 0)


def test_dense_budget_covers_the_compression_path_and_stops_early():
    config = _config(epochs=3, prune_epochs=4, cluster_epochs=2, patience=1)
    assert dense_epoch_budget(config) == 9 and dense_epoch_budget(config.replace(epochs=0)) == 0
    (x, _), test = _data()
    noise = ((x, np.random.default_rng(1).integers(0, 3, len(x))), test)  # nothing to learn: no progress
    dc = DeepCompression(config.replace(epochs=30, patience=1), noise, verbose=0)
    dc.train_dense(_model())
    details = dc.stages["dense"].details
    assert details["epochs"] == 36 and details["epochs_run"] < 36
    assert dc.stages["dense"].validation_accuracy == pytest.approx(details["best_val_accuracy"])


# ---------------------------------------------------------------------------------------------- distillation

def _reference_loss(labels, teacher_logits, student_logits, temperature, weight):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    ce = -np.sum(np.eye(3)[labels] * log_softmax(student_logits), axis=-1)
    p = np.exp(log_softmax(teacher_logits / temperature))
    kl = np.sum(p * (np.log(p) - log_softmax(student_logits / temperature)), axis=-1)
    return (1 - weight) * ce + weight * temperature ** 2 * kl


def test_distillation_loss_matches_the_formula_for_logits_and_softmax_outputs():
    rng = np.random.default_rng(0)
    labels = np.array([0, 2, 1, 1])
    teacher, student = rng.normal(size=(4, 3)) * 3, rng.normal(size=(4, 3)) * 3
    packed = training.pack_targets(labels, np.log(np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True)))
    want = _reference_loss(labels, teacher, student, 4.0, 0.3)
    from_logits = training.distillation_loss(4.0, 0.3, from_logits=True)(packed.astype(np.float32),
                                                                         student.astype(np.float32))
    np.testing.assert_allclose(np.asarray(from_logits), want, rtol=1e-4)
    probabilities = np.exp(student) / np.exp(student).sum(-1, keepdims=True)
    from_softmax = training.distillation_loss(4.0, 0.3, from_logits=False)(packed.astype(np.float32),
                                                                           probabilities.astype(np.float32))
    np.testing.assert_allclose(np.asarray(from_softmax), want, rtol=1e-4)
    plain_ce = training.distillation_loss(4.0, 0.0, from_logits=True)(packed.astype(np.float32),
                                                                       student.astype(np.float32))
    np.testing.assert_allclose(np.asarray(plain_ce), _reference_loss(labels, teacher, student, 4.0, 0.0), rtol=1e-5)


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_distillation_runs_through_pruning_and_clustering(activation):
    data = _data()
    dc = DeepCompression(_config(distill_weight=0.5, epochs=1, prune_epochs=1, prune_iterations=1), data, verbose=0)
    dense = dc.train_dense(_model(activation))
    targets = training.teacher_targets(dense, dc.splits())
    np.testing.assert_allclose(np.exp(targets.fit).sum(axis=-1), 1.0, rtol=1e-4)  # log-probabilities
    pruned = dc.prune()
    kernel = dc_keras.pipeline.kernel_arrays(pruned)["fc1"]
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=1 / 256)
    clustered = dc.cluster()
    after = dc_keras.pipeline.kernel_arrays(clustered)["fc1"]
    np.testing.assert_array_equal(after == 0, kernel == 0)
    assert np.unique(after[after != 0]).size <= 8
    assert dc.stages["clustered"].validation_accuracy is not None


# ---------------------------------------------------------------------------------------------- budget

def test_budget_check_and_report_lines():
    met = accuracy_budget.budget_check(0.90, 0.897, 0.5, 0.91, 0.905)
    assert met["met"] and met["change_points"] == pytest.approx(-0.3)
    missed = accuracy_budget.budget_check(0.90, 0.88, 0.5)
    assert missed["met"] is False and "missed by 1.50 points" in accuracy_budget.shortfall_message(missed)
    assert accuracy_budget.budget_check(0.9, 0.95, -100)["met"] is False
    assert accuracy_budget.budget_check(None, 0.9, 0.5)["met"] is None
    from dc_keras.pipeline.report import budget_lines

    assert "NOT met" in budget_lines(missed, [])[0] and "max_drop 0.5" in budget_lines(missed, [])[0]


def test_relax_backs_off_the_most_sensitive_layer():
    model = _model()
    config = CompressionConfig(sparsity={"fc1": 0.94, "fc2": 0.5}, bits={"fc1": 4, "fc2": 0})
    relaxed, change = accuracy_budget.relax(config, model, {"fc1": 0.05, "fc2": 0.01})
    assert relaxed.sparsity == {"fc1": 0.91, "fc2": 0.5} and relaxed.bits == {"fc1": 5, "fc2": 0}
    assert "fc1" in change and "94.0% -> 91.0%" in change and "bits 4 -> 5" in change
    quality, _ = accuracy_budget.relax(CompressionConfig(sparsity=None, quality=2.0), model, {"fc2": 0.1})
    assert quality.quality == {"fc1": 2.0, "fc2": 1.5} and quality.bits == {"fc1": 5, "fc2": 6}
    spent = CompressionConfig(sparsity={"fc1": 0.0}, bits=8)
    assert accuracy_budget.relax(spent, model, {"fc1": 0.1})[0] is None


def test_back_off_rounds_relax_and_retrain_until_max_rounds():
    dc = DeepCompression(_config(max_drop=-100.0, prune_epochs=1, prune_iterations=1, cluster_epochs=0), _data(),
                         verbose=0)
    dc.train_dense(_model())
    dc.prune()
    dc.cluster()
    rounds = dc.back_off(2)
    assert [r["round"] for r in rounds] == [1, 2]
    assert dc.config.sparsity["fc1"] < 0.75 and dc.config.bits["fc1"] == 5
    np.testing.assert_allclose(np.mean(dc_keras.pipeline.kernel_arrays(dc.pruned_model)["fc1"] == 0),
                               dc.config.sparsity["fc1"], atol=1 / 256)
    relaxed = dc.config
    dc.config = dc.config.replace(max_drop=100.0)
    assert len(dc.back_off(3)) == 2 and dc.config == relaxed.replace(max_drop=100.0)  # met: no further round


def _npz(path):
    (x, y), (xt, yt) = _data()
    np.savez(str(path), x_train=x, y_train=y, x_test=xt, y_test=yt)
    return str(path)


def test_cli_auto_then_strict_exits_3_when_max_drop_is_missed_and_still_writes_the_result(tmp_path, capsys):
    from absl import flags

    from dc_keras.cli import compress

    model_path = str(tmp_path / "m.keras")
    _model().save(model_path)
    fv = compress.define_flags(flags.FlagValues())
    fv(["dc-compress", f"--model={model_path}", f"--data={_npz(tmp_path / 'd.npz')}",
        f"--output_dir={tmp_path / 'out'}", "--epochs=1", "--prune_epochs=1", "--prune_iterations=1",
        "--cluster_epochs=0", "--sparsity=0.5", "--bits=4", "--batch_size=64", "--verbosity_level=0",
        "--noplots", "--max_drop=-100", "--strict", "--auto", "--auto_rounds=1"])
    assert compress.compress(fv) == compress.EXIT_BUDGET_MISSED == 3
    err = capsys.readouterr().err
    assert "dc-compress: error: compressed test accuracy" in err and "--max_drop allows -100" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())  # written all the same
    assert report["accuracy_budget"]["met"] is False and report["accuracy_budget"]["max_drop_points"] == -100
    assert report["validation_accuracy"]["dense"] is not None
    assert [r["round"] for r in report["auto_rounds"]] == [1]  # --auto tried once, in vain
    assert report["config"]["sparsity"] == {"fc1": 0.25, "fc2": 0.5} and report["config"]["bits"]["fc1"] == 5
    assert "NOT met" in (tmp_path / "out" / "report.txt").read_text()
    assert os.path.exists(tmp_path / "out" / "compressed.tflite")


def test_cli_budget_status_warns_without_strict(capsys):
    from dc_keras.cli import compress

    missed = accuracy_budget.budget_check(0.9, 0.85, 0.5)
    assert compress._budget_status(missed, strict=False) == 0
    assert "dc-compress: warning: compressed test accuracy 85.00% is 5.00 points below" in capsys.readouterr().err
    assert compress._budget_status(accuracy_budget.budget_check(0.9, 0.85, 100), strict=True) == 0
    assert compress._budget_status({}, strict=True) == 0  # nothing measured: nothing to enforce
    assert capsys.readouterr().err == ""
