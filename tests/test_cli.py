"""Tests for keras_adp.cli and keras_adp.commands: the `keras-adp` command
line, end to end.

One tiny training run (256 samples, 3 epochs, vgg_small at width 0.25, with
its dense baseline) is shared by the tests that need a finished run; tests
that change a run work on a copy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_adp
from keras_adp import cli
from keras_adp import commands
from keras_adp import data
from keras_adp import experiment
from keras_adp import export
from keras_adp import report
from keras_adp import training

TINY_RUN = [
    "--limit", "256",
    "--epochs", "3",
    "--warmup-epochs", "1",
    "--interval", "1",
    "--width", "0.25",
    "--recovery-updates", "none",  # 3 updates per epoch: cut anyway.
    "--verbose", "0",
]
RUN_FILES = [
    "LATEST",
    "train_options.json",
    "model.keras",
    "model_float32.tflite",
    "model_int8.tflite",
    "dense_float32.tflite",
    "dense_int8.tflite",
    report.REPORT_JSON,
    report.REPORT_MD,
    *report.PLOT_FILES.values(),
]


# What TensorFlow, absl and the TFLite converter and runtime print on their
# own, seen on TF 2.21 (the first line of each kind).
TENSORFLOW_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]"  # absl/TF C++
    r"|absl::InitializeLog|cudart_stub|cpu_feature_guard|oneDNN"
    r"|To enable the following instructions"
    r"|XNNPACK|fully_quantize|^WARNING:tensorflow|^INFO: ",
    re.MULTILINE,
)


def environment_without_tf_settings():
    """This process's environment without TensorFlow's log settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """(run directory, exit status, stdout, the `validation_data` of every
    `ADPTrainer.fit` call) of one tiny `keras-adp train`."""
    run_dir = tmp_path_factory.mktemp("run") / "adp"
    stdout = io.StringIO()
    validation_data = []
    fit = training.ADPTrainer.fit

    def recording_fit(self, *args, **kwargs):
        validation_data.append(kwargs.get("validation_data"))
        return fit(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.ADPTrainer, "fit", recording_fit)
        with contextlib.redirect_stdout(stdout):
            status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_dir)])
    return run_dir, status, stdout.getvalue(), validation_data


def copy_run(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


# ---------------------------------------------------------------------------
# keras-adp train


def test_train_writes_model_tflite_files_report_and_plots(trained_run):
    run_dir, status, _, _ = trained_run

    assert status == 0
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / (run_dir / "LATEST").read_text().strip()).is_dir()


def test_train_report_holds_evaluation_tflite_parity_and_settings(trained_run):
    run_dir = trained_run[0]

    written = report.load_report(run_dir)

    assert len(written["history"]) == 3
    assert written["summary"]["accuracy_source"] == "evaluation on the test split"
    assert 0.0 <= written["summary"]["accuracy"] <= 1.0
    assert written["summary"]["final_params"] <= written["summary"]["dense_params"]
    for mode in ("float32", "int8"):
        entry = written["tflite"][mode]
        assert entry["path"] == f"model_{mode}.tflite"
        assert entry["parity"]["passed"] is True
        assert entry["parity"]["quantization"] == mode
        assert entry["latency"]["median_ms"] > 0
        dense_entry = written["dense_baseline"]["tflite"][mode]
        assert dense_entry["size_bytes"] >= entry["size_bytes"]
    config = written["extra"]["config"]
    assert config["model"] == "vgg_small"
    assert config["dataset"] == "embedded"
    assert (config["num_train"], config["num_validation"]) == (230, 26)
    assert config["num_test"] == 256
    assert config["policy"]["warmup_epochs"] == 1
    assert config["policy"]["max_accuracy_drop"] == 0.01


def test_train_records_the_guard_decision_on_every_pruning_step(trained_run):
    written = report.load_report(trained_run[0])

    assert written["steps"]
    for step in written["steps"]:
        assert step["outcome"] in ("accepted", "rolled back")
        assert step["guard"]["monitor"] == "val_accuracy"
        assert step["guard"]["action"].startswith(step["outcome"])
    markdown = (trained_run[0] / report.REPORT_MD).read_text()
    assert "| Step | After epoch | Attempt | Outcome |" in markdown


def test_train_and_dense_baseline_validate_on_held_out_training_samples(
    trained_run,
):
    splits = data.load_dataset("embedded", limit=256, batch_size=64)
    expected = np.concatenate([images for images, _ in splits.validation])
    test_images = np.concatenate([images for images, _ in splits.test])

    validation_data = trained_run[3]

    assert len(validation_data) == 2  # The ADP run, then the dense baseline.
    for dataset in validation_data:
        images = np.concatenate([np.asarray(x) for x, _ in dataset])
        np.testing.assert_array_equal(images, expected)
        assert len(images) == 26 != len(test_images)


def test_train_compares_the_pruned_model_with_the_trained_dense_baseline(
    trained_run,
):
    run_dir, _, stdout, _ = trained_run

    dense = report.load_report(run_dir)["dense_baseline"]

    assert dense["trained"] is True
    assert 0.0 <= dense["accuracy"] <= 1.0
    assert [record["epoch"] for record in dense["history"]] == [0, 1, 2]
    rows = {
        line.split(" | ")[0]: line for line in stdout.splitlines()
        if line.startswith("| ")
    }
    assert re.fullmatch(
        r"\| Test accuracy \| \d+\.\d\d% \| \d+\.\d\d% \| [+-]\d+\.\d\d pts \|",
        rows["| Test accuracy"],
    )
    assert re.fullmatch(
        r"\| Parameters \| [\d,]+ \| [\d,]+ \| [+-]\d+\.\d% \([\d.]+x smaller\) \|",
        rows["| Parameters"],
    )
    assert rows["| MACs / inference"].count("x smaller") == 1


def test_train_prints_where_the_report_is_and_a_summary_table(trained_run):
    run_dir, _, stdout, _ = trained_run

    assert f"Report: {run_dir / report.REPORT_MD}" in stdout
    assert "| Parameters |" in stdout
    assert "| TFLite int8 size |" in stdout


def test_resume_continues_a_run_for_more_epochs(trained_run, tmp_path, capsys):
    run_dir = copy_run(trained_run[0], tmp_path)
    before = report.load_report(run_dir)["history"]

    status = cli.main(
        ["train", *TINY_RUN, "--epochs", "4", "--run-dir", str(run_dir),
         "--resume", "--no-export", "--no-dense-baseline"]
    )

    assert status == 0
    assert "nothing to resume" not in capsys.readouterr().out
    after = report.load_report(run_dir)
    assert [record["epoch"] for record in after["history"]] == [0, 1, 2, 3]
    assert after["history"][:3] == before
    assert after["tflite"] == {}


def test_resume_with_other_data_options_is_refused(trained_run, tmp_path, capsys):
    run_dir = copy_run(trained_run[0], tmp_path)

    status = cli.main(
        ["train", *TINY_RUN, "--limit", "128", "--run-dir", str(run_dir), "--resume"]
    )

    assert status == 1
    assert "--limit 256 (now 128)" in capsys.readouterr().err


@pytest.mark.parametrize("existing", [False, True])
def test_resume_without_a_checkpoint_says_a_new_run_starts(
    tmp_path, monkeypatch, capsys, existing
):
    run_dir = tmp_path / "run"
    if existing:
        run_dir.mkdir()
    monkeypatch.setattr(training.ADPTrainer, "fit", _interrupt)

    status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_dir), "--resume"])

    assert status == 130
    lines = capsys.readouterr().out.splitlines()
    assert (
        f"[keras-adp] nothing to resume in '{run_dir}' (no checkpoint); "
        "starting a new run there"
    ) in lines


def test_resume_with_unreadable_start_options_exits_1_naming_the_file(
    trained_run, tmp_path, capsys
):
    run_dir = copy_run(trained_run[0], tmp_path)
    (run_dir / commands.OPTIONS_FILE).write_text("{truncated")

    status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_dir), "--resume"])

    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Could not read the options")
    assert str(run_dir / commands.OPTIONS_FILE) in error
    assert error.count("\n") == 1


def test_run_dir_that_is_a_file_exits_1(tmp_path, capsys):
    run_file = tmp_path / "run"
    run_file.write_text("not a directory")

    status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_file)])

    assert status == 1
    assert "which is a file" in capsys.readouterr().err


def test_no_dense_baseline_shows_the_dense_architecture_untrained(
    tmp_path, capsys
):
    run_dir = tmp_path / "run"

    status = cli.main(
        ["train", *TINY_RUN, "--epochs", "2", "--run-dir", str(run_dir),
         "--no-dense-baseline", "--no-export"]
    )

    assert status == 0
    written = report.load_report(run_dir)
    assert written["dense_baseline"]["trained"] is False
    assert written["extra"]["config"]["dense_baseline"] is False
    assert "| Test accuracy | not trained |" in capsys.readouterr().out


def test_train_refuses_a_run_directory_that_holds_a_run(trained_run, capsys):
    run_dir = trained_run[0]

    status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_dir)])

    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Run directory")
    assert "--resume" in error and "--overwrite" in error


def test_overwrite_deletes_the_previous_run(trained_run, tmp_path, monkeypatch):
    run_dir = copy_run(trained_run[0], tmp_path)
    (run_dir / "notes.txt").write_text("kept")
    monkeypatch.setattr(training.ADPTrainer, "fit", _interrupt)

    status = cli.main(["train", *TINY_RUN, "--run-dir", str(run_dir), "--overwrite"])

    assert status == 130
    # Only the new run's options were written before the interruption.
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "notes.txt", "train_options.json",
    ]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "baseline, stopped",
    [
        ([], "the finished epochs are checkpointed"),
        (["--no-dense-baseline"], "the finished epochs are checkpointed"),
        # The dense baseline trains first; stopped in it.
        (["--dense-reference"], "while the dense baseline trained"),
    ],
)
def test_interrupted_training_exits_130_and_says_how_to_resume(
    tmp_path, monkeypatch, capsys, baseline, stopped
):
    monkeypatch.setattr(training.ADPTrainer, "fit", _interrupt)
    command = ["train", *TINY_RUN, *baseline, "--run-dir", str(tmp_path / "run")]

    status = cli.main(command)

    assert status == 130
    error = capsys.readouterr().err
    assert f"keras-adp {' '.join(command)} --resume" in error
    assert stopped in error


def test_library_value_error_exits_1_with_one_line(tmp_path, capsys):
    status = cli.main(
        ["train", "--limit", "64", "--epochs", "2", "--warmup-epochs", "2",
         "--run-dir", str(tmp_path / "run")]
    )

    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Expected `epochs` > warmup_epochs=2")
    assert error.count("\n") == 1


def test_data_dir_with_the_embedded_dataset_is_an_error(tmp_path, capsys):
    status = cli.main(
        ["train", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")]
    )

    assert status == 1
    assert "bundled" in capsys.readouterr().err


def test_failed_parity_is_recorded_with_the_measured_errors(monkeypatch):
    measured = export.VerifyResult(
        max_abs_error=0.5, top1_agreement=0.6, num_samples=10,
        quantization="int8", atol=None, rtol=0.0, min_top1_agreement=0.9,
    )
    calls = []

    def measure(path, model, inputs):
        calls.append(path)
        return export.ParityCheck(measured, "top1_agreement=0.6000 is below 0.9")

    monkeypatch.setattr(export, "measure_tflite", measure)

    parity = experiment.parity("m.tflite", None, None)

    assert calls == ["m.tflite"]  # Measured once.
    assert parity["passed"] is False
    assert parity["top1_agreement"] == 0.6
    assert parity["min_top1_agreement"] == 0.9
    assert "below 0.9" in parity["message"]


# ---------------------------------------------------------------------------
# keras-adp export


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """The first 64 preprocessed training inputs of the tiny run, as .npy."""
    splits = data.load_dataset("embedded", limit=256)
    path = tmp_path_factory.mktemp("calibration") / "inputs.npy"
    np.save(path, data.calibration_batch(splits, num_samples=64))
    return path


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_export_writes_tflite_and_prints_size_parity_and_latency(
    trained_run, calibration_file, tmp_path, capsys, quantization
):
    out = tmp_path / f"small_{quantization}.tflite"

    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"),
         "--quantization", quantization,
         "--calibration", str(calibration_file),
         "--out", str(out), "--runs", "5"]
    )

    assert status == 0
    assert out.stat().st_size > 0
    stdout = capsys.readouterr().out
    assert f"size: {out.stat().st_size:,} bytes" in stdout
    assert f"parity ({quantization}, 64 calibration samples): ok" in stdout
    assert "latency:" in stdout


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or importlib.util.find_spec("tf2onnx") is None,
    reason='ONNX extra not installed: pip install -e ".[onnx]"',
)
def test_export_format_onnx_writes_onnx_and_prints_size_parity_and_latency(
    trained_run, calibration_file, tmp_path, capsys
):
    model_path = shutil.copy(trained_run[0] / "model.keras", tmp_path / "m.keras")

    status = cli.main(
        ["export", str(model_path), "--format", "onnx",
         "--calibration", str(calibration_file), "--runs", "5"]
    )

    assert status == 0
    out = tmp_path / "m.onnx"
    assert out.stat().st_size > 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout
    assert f"size: {out.stat().st_size:,} bytes" in stdout
    assert "parity (float32, 64 calibration samples): ok" in stdout
    assert "latency:" in stdout


def test_export_format_onnx_refuses_quantization(trained_run, capsys):
    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"), "--format", "onnx",
         "--quantization", "int8"]
    )

    assert status == 1
    assert "ONNX files are exported in float32" in capsys.readouterr().err


def test_export_format_onnx_without_the_extra_exits_1_naming_it(
    trained_run, tmp_path, capsys, monkeypatch
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *args: None if name == "tf2onnx" else find_spec(name, *args),
    )

    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"), "--format", "onnx",
         "--out", str(tmp_path / "m.onnx")]
    )

    assert status == 1
    assert '.[onnx]' in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_export_without_calibration_checks_parity_on_random_inputs(
    trained_run, tmp_path, capsys
):
    model_path = shutil.copy(trained_run[0] / "model.keras", tmp_path / "m.keras")

    status = cli.main(["export", str(model_path), "--runs", "5"])

    assert status == 0
    assert (tmp_path / "m_float32.tflite").is_file()
    assert "random inputs): ok" in capsys.readouterr().out


def test_export_of_a_missing_model_exits_1_with_message(tmp_path, capsys):
    status = cli.main(["export", str(tmp_path / "missing.keras")])

    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Expected a saved Keras model file.")
    assert "missing.keras" in error
    assert error.count("\n") == 1


def _write_zip_without_config(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no model here")


@pytest.mark.parametrize(
    "name, make",
    [
        ("notes.txt", lambda path: path.write_text("some notes")),
        ("missing.txt", lambda path: None),
        ("garbage.keras", lambda path: path.write_bytes(b"not a zip")),
        ("empty.keras", lambda path: path.write_bytes(b"")),
        ("no_config.keras", _write_zip_without_config),
        ("folder.keras", lambda path: path.mkdir()),
    ],
)
def test_export_of_a_file_that_is_not_a_saved_model_exits_1_with_one_line(
    tmp_path, capsys, name, make
):
    path = tmp_path / name
    make(path)

    status = cli.main(["export", str(path)])

    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ")
    assert f"'{path}'" in error
    assert "`.keras` file saved by `model.save(...)`" in error
    assert "TFSMLayer" not in error
    assert error.count("\n") == 1
    assert not list(tmp_path.glob("*.tflite"))


def test_int8_export_without_calibration_exits_1(trained_run, capsys):
    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"), "--quantization", "int8"]
    )

    assert status == 1
    assert "--calibration" in capsys.readouterr().err


def test_npz_calibration_with_several_unnamed_arrays_exits_1(
    trained_run, tmp_path, capsys
):
    path = tmp_path / "inputs.npz"
    np.savez(path, a=np.zeros((2, 28, 28, 1)), b=np.zeros(2))

    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"), "--calibration", str(path)]
    )

    assert status == 1
    assert "named 'x'" in capsys.readouterr().err


def _save_npy_with_nan(path):
    inputs = np.zeros((4, 28, 28, 1), "float32")
    inputs[2, 3, 4, 0] = np.nan
    np.save(path, inputs)


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("nan.npy", _save_npy_with_nan, "element [2, 3, 4, 0] is nan"),
        ("garbage.npy", lambda path: path.write_bytes(b"garbage"),
         "Could not read --calibration"),
        ("garbage.npz", lambda path: path.write_bytes(b"PK\x03\x04garbage"),
         "Could not read --calibration"),
        ("strings.npy", lambda path: np.save(path, np.array(["a", "b"])),
         "numeric model inputs"),
    ],
)
def test_export_with_an_unusable_calibration_file_exits_1_naming_it(
    trained_run, tmp_path, capsys, name, make, message
):
    path = tmp_path / name
    make(path)

    status = cli.main(
        ["export", str(trained_run[0] / "model.keras"), "--quantization", "int8",
         "--calibration", str(path), "--out", str(tmp_path / "m.tflite")]
    )

    assert status == 1
    error = capsys.readouterr().err
    assert message in error and f"'{path}'" in error
    assert error.count("\n") == 1
    assert not (tmp_path / "m.tflite").exists()


def test_export_without_calibration_of_a_model_with_unknown_input_size_exits_1(
    tmp_path, capsys
):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(2, 3)(inputs)
    )
    path = tmp_path / "any_size.keras"
    keras.Model(inputs, outputs).save(path)

    status = cli.main(["export", str(path)])

    assert status == 1
    assert "Pass --calibration" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# keras-adp report


def test_report_regenerates_markdown_and_plots(trained_run, tmp_path, capsys):
    run_dir = copy_run(trained_run[0], tmp_path)
    markdown = (run_dir / report.REPORT_MD).read_text()
    for name in [report.REPORT_MD, *report.PLOT_FILES.values()]:
        (run_dir / name).unlink()

    status = cli.main(["report", str(run_dir)])

    assert status == 0
    assert (run_dir / report.REPORT_MD).read_text() == markdown
    for name in report.PLOT_FILES.values():
        assert (run_dir / name).stat().st_size > 0
    assert "| Parameters |" in capsys.readouterr().out


def test_report_of_an_unfinished_run_reads_its_checkpoint(
    trained_run, tmp_path, capsys
):
    run_dir = copy_run(trained_run[0], tmp_path)
    (run_dir / report.REPORT_JSON).unlink()

    status = cli.main(["report", str(run_dir)])

    assert status == 0
    assert "read checkpoint-0003/state.json" in capsys.readouterr().out
    markdown = (run_dir / report.REPORT_MD).read_text()
    assert "Built from checkpoint `checkpoint-0003/state.json`" in markdown
    assert not (run_dir / report.REPORT_JSON).exists()


def test_report_of_a_missing_directory_exits_1(tmp_path, capsys):
    status = cli.main(["report", str(tmp_path / "nowhere")])

    assert status == 1
    assert capsys.readouterr().err.startswith("error: Expected a run directory.")


def test_report_of_a_file_says_it_is_not_a_directory(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text("{}")

    status = cli.main(["report", str(path)])

    assert status == 1
    assert f"'{path}', which is a file" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Usage and help.


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train", "--bogus"],
        ["train", "--epochs", "0"],
        ["train", "--width", "-1"],
        ["train", "--model", "alexnet"],
        ["export"],
        ["export", "m.keras", "--quantization", "int4"],
        ["report"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage: keras-adp" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--max-prune-steps", "abc"],
         "argument --max-prune-steps: expected an integer >= 0 or 'none', "
         "received 'abc'"),
        (["train", "--warmup-epochs", "-1"],
         "argument --warmup-epochs: expected an integer >= 0, received '-1'"),
        (["train", "--epochs", "2.5"],
         "argument --epochs: expected an integer >= 1, received '2.5'"),
        (["train", "--lr", "fast"],
         "argument --lr: expected a finite number > 0, received 'fast'"),
        (["train", "--width", "inf"],
         "argument --width: expected a finite number > 0, received 'inf'"),
        (["train", "--seed", "-1"],
         "argument --seed: expected an integer from 0 to 2147483647, "
         "received '-1'"),
        (["train", "--verbose", "loud"],
         "argument --verbose: expected an integer, received 'loud'"),
        (["export", "m.keras", "--runs", "many"],
         "argument --runs: expected an integer >= 1, received 'many'"),
        (["train", "--validation-split", "1"],
         "argument --validation-split: expected a number between 0 and 1 "
         "(exclusive), received '1'"),
        (["train", "--max-accuracy-drop", "lots"],
         "argument --max-accuracy-drop: expected a number from 0 to 1 "
         "(exclusive) or 'none', received 'lots'"),
    ],
)
def test_invalid_option_values_say_what_was_expected_and_received(
    argv, expected, capsys
):
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert "invalid" not in error and "_" not in error.splitlines()[-1]


@pytest.mark.parametrize("command", [[], ["train"], ["export"], ["report"]])
def test_help_describes_each_command(command, capsys):
    assert cli.main([*command, "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: keras-adp")
    if command:
        assert "examples:" in help_text
        assert "--tf-logs" in help_text


def test_train_help_lists_the_files_of_a_run(capsys):
    cli.main(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in ["model.keras", "model_int8.tflite", "report.md", "widths.png"]:
        assert name in help_text


@pytest.mark.slow
def test_module_runs_as_a_program():
    completed = subprocess.run(
        [sys.executable, "-m", "keras_adp.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0
    assert "train" in completed.stdout and "export" in completed.stdout


def test_export_refuses_lambda_model_unless_unsafe_is_passed(tmp_path, capsys):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(3)(inputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    calibration = tmp_path / "x.npy"
    np.save(calibration, np.ones((8, 4), "float32"))
    code = cli.main(["export", str(path), "--calibration", str(calibration),
                     "--out", str(tmp_path / "m.tflite"), "--runs", "2"])
    assert code == 1
    assert "--unsafe-deserialization" in capsys.readouterr().err
    code = cli.main(["export", str(path), "--calibration", str(calibration),
                     "--out", str(tmp_path / "m.tflite"), "--runs", "2",
                     "--unsafe-deserialization"])
    assert code == 0


# ---------------------------------------------------------------------------
# TensorFlow's own output.


def test_train_prints_no_tensorflow_log_lines_by_default(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "keras_adp.cli", "train", "--limit", "64",
         "--epochs", "2", "--warmup-epochs", "1", "--width", "0.25",
         "--verbose", "0", "--no-dense-baseline",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment_without_tf_settings(),
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "model_int8.tflite" in completed.stdout  # Converter and runtime ran.
    assert not TENSORFLOW_LOG_LINE.search(completed.stderr), completed.stderr


@pytest.mark.slow
def test_tf_logs_option_shows_what_tensorflow_prints(trained_run):
    environment = environment_without_tf_settings()
    plain = subprocess.run(
        [sys.executable, "-c", "import tensorflow"],
        capture_output=True, text=True, timeout=300, env=environment,
    )
    shown = subprocess.run(
        [sys.executable, "-m", "keras_adp.cli", "report", "--tf-logs",
         str(trained_run[0])],
        capture_output=True, text=True, timeout=300, env=environment,
    )

    assert shown.returncode == 0, shown.stderr[-3000:]
    # The same lines as a plain import, timestamps and thread ids aside.
    for line in plain.stderr.splitlines():
        assert line.split("] ")[-1] in shown.stderr


def test_hidden_tensorflow_output_keeps_python_messages_and_restores_settings(
    capfd,
):
    logger = logging.getLogger("tensorflow")
    before = (os.environ.get("TF_CPP_MIN_LOG_LEVEL"), logger.level)

    with cli.hidden_tensorflow_output():
        os.write(2, b"native log line\n")
        print("python message", file=sys.stderr, flush=True)
        inside = (os.environ.get("TF_CPP_MIN_LOG_LEVEL"), logger.level)

    err = capfd.readouterr().err
    assert "python message" in err
    assert "native log line" not in err
    assert inside == ("3", logging.ERROR)
    assert (os.environ.get("TF_CPP_MIN_LOG_LEVEL"), logger.level) == before


def test_hidden_tensorflow_output_is_printed_when_the_command_crashes(capfd):
    with pytest.raises(RuntimeError, match="crash"):
        with cli.hidden_tensorflow_output():
            os.write(2, b"native detail before the crash\n")
            raise RuntimeError("crash")

    assert "native detail before the crash" in capfd.readouterr().err


def test_importing_the_package_and_the_cli_loads_no_tensorflow():
    completed = subprocess.run(
        [sys.executable, "-c",
         "import logging, os, sys, keras_adp, keras_adp.cli; "
         "print('tensorflow' in sys.modules, "
         "os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
         "logging.getLogger('tensorflow').level)"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment_without_tf_settings(),
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "None", "0"]


def test_package_exports_resolve_on_first_use():
    for name in keras_adp.__all__:
        assert getattr(keras_adp, name) is not None, name
    assert keras_adp.ADPTrainer is training.ADPTrainer
    assert keras_adp.report is report
    assert set(keras_adp.__all__) <= set(dir(keras_adp))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        keras_adp.nothing  # noqa: B018



def test_train_parses_dense_reference_and_removal_scale():
    from keras_adp import command_parsers, command_train

    args = command_parsers.build_parser().parse_args(
        ["train", "--dense-reference", "--removal-scale", "2"]
    )
    options = command_train._train_options(args)
    assert options.dense_reference is True
    assert options.removal_scale == 2.0
    defaults = command_train._train_options(
        command_parsers.build_parser().parse_args(["train"])
    )
    assert defaults.dense_reference is False
    assert defaults.removal_scale == keras_adp.ADPPolicy.removal_scale
    assert defaults.trial == keras_adp.ADPPolicy.trial
    twin = command_train._train_options(
        command_parsers.build_parser().parse_args(["train", "--trial", "twin"])
    )
    assert experiment.policy_of(twin).trial == "twin"
    off = command_train._train_options(
        command_parsers.build_parser().parse_args(
            ["train", "--no-dense-reference"]
        )
    )
    assert off.dense_reference is False
    with pytest.raises(SystemExit):
        command_parsers.build_parser().parse_args(
            ["train", "--removal-scale", "0"]
        )


@pytest.mark.parametrize(
    "argv, expected",
    [([], 1600), (["--recovery-updates", "250"], 250),
     (["--recovery-updates", "none"], None)],
)
def test_train_parses_recovery_updates(argv, expected):
    from keras_adp import command_parsers, command_train

    args = command_parsers.build_parser().parse_args(["train", *argv])
    options = command_train._train_options(args)
    assert experiment.policy_of(options).recovery_updates == expected


@pytest.mark.parametrize("bad", ["0", "-3", "1.5", "many"])
def test_train_rejects_a_recovery_updates_below_one(bad, capsys):
    from keras_adp import command_parsers

    with pytest.raises(SystemExit):
        command_parsers.build_parser().parse_args(
            ["train", "--recovery-updates", bad]
        )
    assert "--recovery-updates" in capsys.readouterr().err
