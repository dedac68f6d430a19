"""The tfmot runs of `benchmarks/bench_tradeoff.py`, on a tiny setting.

One module-scoped invocation trains both tfmot schedules (`tfmot-gradual`,
`tfmot-matched`) of vgg_small x0.25 on 540 embedded samples for 3 epochs, in
tf-keras subprocesses, keeping the handover files. The expected non-zero
counts are recomputed here from the Keras 3 model's weight shapes and
tfmot's per-kernel rule (`round(size * (1 - sparsity))` kept); the initial
weights are rebuilt here from the seed. Skipped without tf-keras and tfmot.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import pathlib
import sys

import keras
import numpy as np
import pytest

from keras_adp import models as models_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SEED = 3
TARGET = 3000
BASE_WIDTH = 0.25
ARGV = [
    "--data", "embedded", "--train-samples", "600", "--test-samples", "200",
    "--epochs", "3", "--batch-size", "64", "--seeds", str(SEED),
    "--base-width", str(BASE_WIDTH), "--runs", "tfmot-gradual",
    "tfmot-matched", "--tfmot-params", str(TARGET),
]

pytestmark = pytest.mark.skipif(
    any(
        importlib.util.find_spec(name) is None
        for name in ("tf_keras", "tensorflow_model_optimization")
    ),
    reason="tf-keras and tensorflow-model-optimization are needed for the "
    "tfmot runs (pip install keras-adp[tfmot])",
)


@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "bench_tradeoff.py"
    spec = importlib.util.spec_from_file_location("bench_tradeoff", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    """(rows, printed output, handover folder, --out JSON) of one run."""
    work_dir = tmp_path_factory.mktemp("tfmot")
    out = work_dir / "out.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = bench.main(
            ARGV + ["--tfmot-work-dir", str(work_dir), "--out", str(out)]
        )
    return rows, printed.getvalue(), work_dir, json.loads(out.read_text())


def dense_model():
    """The seed's dense model, built here as `bench_tradeoff.build` does."""
    keras.utils.set_random_seed(SEED)
    return models_lib.build_model("vgg_small", (28, 28, 1), 10, BASE_WIDTH)


def kernel_sizes(model):
    return {
        layer.name: int(np.prod(layer.kernel.shape))
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    }


def test_both_schedules_produce_rows(tiny_run):
    rows, _, _, saved = tiny_run
    assert set(rows) == {"tfmot-gradual", "tfmot-matched"}
    assert set(saved["rows"]) == set(rows)
    names = {run: rows[run][str(SEED)]["tfmot"]["schedule"]["name"]
             for run in rows}
    assert names == {"tfmot-gradual": "gradual",
                     "tfmot-matched": "adp-matched"}
    for per_seed in rows.values():
        row = per_seed[str(SEED)]
        assert 0.0 <= row["accuracy"] <= 1.0
        assert len(row["val_accuracy"]) == 3  # One per epoch.
        assert row["process_wall_s"] >= row["wall_s"] > 0
        assert row["process_cpu_s"] >= row["cpu_s"] > 0


def test_nonzero_count_is_the_target_up_to_tfmot_rounding(tiny_run):
    rows, _, _, _ = tiny_run
    model = dense_model()
    sizes = kernel_sizes(model)
    params = sum(int(np.prod(w.shape)) for w in model.weights)
    others = params - sum(sizes.values())
    # F + (1 - s) K = TARGET, so s = 1 - (TARGET - F) / K.
    sparsity = 1.0 - (TARGET - others) / sum(sizes.values())
    # tfmot keeps max(1, round(size * (1 - s))) per kernel, in float32.
    kept_fraction = 1 - np.float32(sparsity)
    expected = {
        name: max(1, int(np.round(np.float32(size) * kept_fraction)))
        for name, size in sizes.items()
    }
    for run, per_seed in rows.items():
        row = per_seed[str(SEED)]
        assert row["params"] == params
        assert row["tfmot"]["target_sparsity"] == pytest.approx(sparsity)
        kept = {name: counts[0]
                for name, counts in row["tfmot"]["kernel_nonzero"].items()}
        assert kept == expected, run
        # Every other parameter (batch norm, the logits' bias) is non-zero
        # after training; the rounding is at most half a weight per kernel.
        assert row["nonzero"] == others + sum(expected.values())
        assert abs(row["nonzero"] - TARGET) <= len(sizes) / 2


def test_tfmot_starts_from_the_dense_runs_initial_weights(tiny_run):
    rows, _, work_dir, _ = tiny_run
    expected = {
        f"{layer.name}/{index}": value
        for layer in dense_model().layers
        for index, value in enumerate(layer.get_weights())
    }
    for run in rows:
        # What the tf-keras model held right after loading, before pruning.
        with np.load(work_dir / f"{run}_s{SEED}_loaded.npz") as loaded:
            assert sorted(loaded.files) == sorted(expected)
            for key, value in expected.items():
                np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_runs_train_on_the_benchmarks_samples_and_schedule(tiny_run):
    _, _, work_dir, _ = tiny_run
    config = json.loads(
        (work_dir / f"tfmot-matched_s{SEED}_config.json").read_text()
    )
    # 600 samples minus the 10% held out, batch 64: 9 steps per epoch.
    with np.load(config["data"]) as data:
        assert len(data["x_train"]) == 540 and len(data["x_val"]) == 60
        assert len(data["x_test"]) == 200
    assert config["cosine_decay_steps"] == 3 * 9
    assert config["validation"] == "val" and config["reseed_each_epoch"]
    # ADPPolicy's defaults prune after epochs 1 and 2: 0 -> target from the
    # end of epoch 1 to the end of epoch 2, a mask every quarter epoch (2).
    schedule = config["schedule"]
    assert (schedule["begin_step"], schedule["frequency"]) == (9, 2)
    assert schedule["end_step"] == 9 + 9 // 2 * 2


def test_table_places_tfmot_rows_by_nonzero_count(tiny_run):
    rows, printed, _, _ = tiny_run
    for run in rows:
        nonzero = rows[run][str(SEED)]["nonzero"]
        line = next(line for line in printed.splitlines()
                    if line.startswith(f"{run} ") and "±" in line)
        assert f"{nonzero:,}* ±" in line
    assert "* non-zero parameters after tfmot's strip_pruning" in printed


def test_table_from_merges_old_files_without_nonzero(bench, tiny_run,
                                                     tmp_path, capsys):
    _, _, work_dir, saved = tiny_run
    old = {"args": {"model": "vgg_small", "base_width": BASE_WIDTH},
           "rows": {"dense": {str(SEED): {
               "accuracy": 0.5, "params": 18706, "macs": 1885056,
               "training_macs": 5.0e9, "wall_s": 4.0, "cpu_s": 4.0}}}}
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    rows = bench.main(["--table-from", str(old_path),
                       str(work_dir / "out.json")])
    printed = capsys.readouterr().out
    assert set(rows) == {"dense", "tfmot-gradual", "tfmot-matched"}
    dense_line = next(line for line in printed.splitlines()
                      if line.startswith("dense "))
    assert "18,706  ±" in dense_line  # No marker: all its parameters.
    gradual = saved["rows"]["tfmot-gradual"][str(SEED)]
    # The params ratio is dense's parameters over the non-zero ones.
    assert f"{18706 / gradual['nonzero']:>6.1f}" in next(
        line for line in printed.splitlines()
        if line.startswith("tfmot-gradual ")
    )


def test_missing_target_is_an_error_before_training(bench):
    with pytest.raises(SystemExit, match="--tfmot-params N"):
        bench.main(["--runs", "dense", "tfmot-gradual", "--seeds", "0"])


def test_target_is_the_mean_params_of_a_saved_run(bench, tmp_path):
    saved = {
        "args": {"model": "vgg_small", "base_width": 0.5},
        "rows": {"adp": {"0": {"params": 1000}, "1": {"params": 2002}},
                 "tfmot-gradual": {"0": {"params": 9000, "nonzero": 1200}}},
    }
    path = tmp_path / "adp.json"
    path.write_text(json.dumps(saved))
    args = argparse.Namespace(
        tfmot_params=None, tfmot_match=f"{path}:adp", adp_name="adp",
        model="vgg_small", base_width=0.5,
    )
    target, source = bench.tfmot_target(args, {})
    assert target == 1501
    assert str(path) in source
    # A tfmot row's size is its non-zero count.
    args.tfmot_match = f"{path}:tfmot-gradual"
    assert bench.tfmot_target(args, {})[0] == 1200
    args.tfmot_match = f"{path}:adp-paper"
    with pytest.raises(SystemExit, match="no `adp-paper` rows"):
        bench.tfmot_target(args, {})
    args.tfmot_match, args.base_width = f"{path}:adp", 1.0
    with pytest.raises(SystemExit, match="--base-width 0.5"):
        bench.tfmot_target(args, {})
