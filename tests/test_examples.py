"""Runs every example top to bottom with `--smoke`, each in a fresh process.

The quickstart and the TFLite export run by default (about a minute each on
2 CPU cores); the CIFAR examples and the tfmot comparison are marked `slow`
(run them with `pytest -m slow tests/test_examples.py`).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT_SECONDS = 900

HAS_TFMOT = all(
    importlib.util.find_spec(name) is not None
    for name in ("tensorflow_model_optimization", "tf_keras")
)


def run_example(name: str, cwd: pathlib.Path) -> str:
    """Runs `examples/<name> --smoke`; returns its stdout, fails with its tail."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--smoke"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, (
        f"examples/{name} --smoke exited with {completed.returncode}.\n"
        f"--- stdout (end) ---\n{completed.stdout[-3000:]}\n"
        f"--- stderr (end) ---\n{completed.stderr[-3000:]}"
    )
    return completed.stdout


def load_benchmark():
    path = REPO / "benchmarks" / "compare_tfmot.py"
    spec = importlib.util.spec_from_file_location("tfmot_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart_smoke_reports_density_and_pruning(tmp_path):
    output = run_example("quickstart.py", tmp_path)
    assert "epoch  1" in output  # The per-epoch density table.
    assert "width 8 ->" in output
    assert "fewer parameters" in output
    # On the 230-image smoke subset the guard may keep or roll back the
    # step: a step was tried and its outcome reported.
    assert "pruning step(s) kept" in output
    assert "after epoch 2 (attempt 1): " in output


def test_export_tflite_smoke_verifies_and_benchmarks_all_files(tmp_path):
    output = run_example("export_tflite.py", tmp_path)
    for name in ("dense", "pruned"):
        for mode in ("float32", "int8"):
            assert f"{name}_{mode}.tflite: verified on" in output
    assert "float32: the pruned model runs" in output
    assert "int8: the pruned model runs" in output


@pytest.mark.slow
def test_vgg19_cifar10_smoke_prunes(tmp_path):
    output = run_example("vgg19_cifar10.py", tmp_path)
    assert "test accuracy of the pruned VGG-19" in output
    # The smoke run trains 4 epochs: warm-up, a step after epoch 2, and the
    # guard's recovery epoch after it; the step is reported kept or rolled back.
    assert "pruning step after epoch 2" in output


@pytest.mark.slow
def test_resnet18_cifar100_smoke_prunes(tmp_path):
    output = run_example("resnet18_cifar100.py", tmp_path)
    assert "top-5 accuracy" in output
    assert "stage2_block1_shortcut_conv" in output


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TFMOT, reason="needs tensorflow-model-optimization and tf-keras")
def test_compare_tfmot_smoke_prints_dense_adp_and_both_tfmot_rows(tmp_path):
    output = run_example("compare_tfmot.py", tmp_path)
    rows = [line.split("|")[0].strip() for line in output.splitlines() if "|" in line]
    assert {
        "dense", "ADP", "tfmot (adp-matched schedule)",
        "tfmot (gradual schedule)",
    } <= set(rows)


def test_matching_sparsity_leaves_the_adp_parameter_count_nonzero():
    benchmark = load_benchmark()
    settings = benchmark.Settings(width=0.25)
    dense = benchmark.build_model(settings)
    kernels = benchmark.kernel_params(dense)
    others = dense.count_params() - kernels
    adp_params = others + kernels // 3
    sparsity = benchmark.matching_sparsity(dense, adp_params)
    np.testing.assert_allclose(others + (1 - sparsity) * kernels, adp_params)


def test_compare_tfmot_quick_settings_keep_explicit_options():
    benchmark = load_benchmark()
    settings, _ = benchmark.parse_args(["--quick", "--epochs", "4"])
    quick = benchmark.Settings.quick()
    assert settings.epochs == 4
    assert settings.train_samples == quick.train_samples
    assert settings.tfmot_schedule == "both"
    assert benchmark.parse_args([])[0] == benchmark.Settings()
    gradual, _ = benchmark.parse_args(["--quick", "--tfmot-schedule", "gradual"])
    assert gradual.tfmot_schedule == "gradual"
    assert settings.max_accuracy_drop is None
    guarded, _ = benchmark.parse_args(["--max-accuracy-drop", "0.01"])
    assert guarded.max_accuracy_drop == 0.01


@pytest.mark.slow
def test_bench_training_smoke_prints_every_run_and_writes_json(tmp_path):
    """The training benchmark end to end on a few bundled samples."""
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "bench_training.py"),
            "--data", "embedded", "--models", "vgg_small", "--width", "0.25",
            "--train-samples", "256", "--test-samples", "128", "--epochs", "3",
            "--max-prune-steps", "1", "--recovery-updates", "none",
            # Unguarded, so that the one step is certain on 256 random-ish
            # samples (the guard's own decisions are tested in test_guard.py).
            "--max-accuracy-drop", "none",
            "--runs", "dense", "adp", "adp-reinit", "scratch",
            "--out", str(out),
        ],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    import json

    rows = json.loads(out.read_text())["results"]["vgg_small@0.25"]
    assert list(rows) == ["dense", "adp", "adp-reinit", "scratch"]
    # One pruning step after the 2 warm-up epochs shrinks the model, and the
    # scratch run trains exactly ADP's final architecture.
    assert rows["adp"]["prune_epochs"] == [2]
    assert rows["adp"]["params"] < rows["dense"]["params"]
    assert rows["scratch"]["params"] == rows["adp"]["params"]
    assert rows["scratch"]["macs"] == rows["adp"]["macs"]
    for run in rows:
        assert f"vgg_small x0.25 {run}: done in" in completed.stdout
    assert "ratio to dense" in completed.stdout
