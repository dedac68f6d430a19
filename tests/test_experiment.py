"""`keras_adp.experiment`: the `keras-adp train` experiment from Python."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from keras_adp import checkpoints
from keras_adp import experiment
from keras_adp import report
from keras_adp import training

TINY = dict(
    limit=256, epochs=3, warmup_epochs=1, interval=1, width=0.25, verbose=0,
    dense_baseline=False, export=False,
    recovery_updates=None,  # A few updates per epoch: cut all the same.
)


def test_run_training_trains_prunes_and_writes_the_report(tmp_path):
    lines = []
    options = experiment.TrainOptions(**TINY, run_dir=str(tmp_path / "run"))
    run = experiment.run_training(options, say=lines.append)
    assert run.run_dir == tmp_path / "run"
    assert isinstance(run.result, training.ADPResult)
    assert len(run.result.history) == 3
    assert run.report["extra"]["config"]["epochs"] == 3
    assert run.report["summary"]["accuracy_source"] == (
        "evaluation on the test split"
    )
    for name in (
        checkpoints.FINAL_MODEL_FILE, report.REPORT_JSON, report.REPORT_MD
    ):
        assert (run.run_dir / name).is_file()
    assert lines[0].startswith("data: embedded")
    assert lines[1].startswith("model: vgg_small at width 0.25")
    assert lines[2].startswith("test split: accuracy")


def test_run_training_is_silent_without_say(tmp_path, capsys):
    options = experiment.TrainOptions(
        **dict(TINY, epochs=2, max_accuracy_drop=None),
        run_dir=str(tmp_path / "run"),
    )
    experiment.run_training(options)
    assert capsys.readouterr().out == ""


def test_an_interrupted_run_names_its_run_dir(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.ADPTrainer, "fit", interrupt)
    options = experiment.TrainOptions(**TINY, run_dir=str(tmp_path / "run"))
    with pytest.raises(experiment.RunInterrupted) as raised:
        experiment.run_training(options)
    assert raised.value.run_dir == tmp_path / "run"
    assert isinstance(raised.value, KeyboardInterrupt)


def test_default_run_dir_names_model_and_dataset():
    assert str(experiment.default_run_dir("vgg_small", "embedded")) == (
        os.path.join("runs", "adp-vgg_small-embedded")
    )


def test_dense_reference_needs_the_dense_baseline(tmp_path):
    options = experiment.TrainOptions(
        **TINY, dense_reference=True, run_dir=str(tmp_path / "run")
    )
    with pytest.raises(ValueError, match="--no-dense-baseline"):
        experiment.run_training(options)
    assert not (tmp_path / "run").exists()


def test_dense_reference_trains_dense_first_and_holds_steps_to_its_curve(
    tmp_path,
):
    lines = []
    options = experiment.TrainOptions(
        **dict(TINY, dense_baseline=True), dense_reference=True,
        run_dir=str(tmp_path / "run"),
    )
    run = experiment.run_training(options, say=lines.append)
    starts = [line.split(":")[0] for line in lines]
    # The baseline trains (and is evaluated) before the ADP run.
    assert starts.index("dense baseline") < starts.index("test split")
    dense_history = run.report["dense_baseline"]["history"]
    curve = [record["logs"]["val_accuracy"] for record in dense_history]
    policy = run.report["extra"]["config"]["policy"]
    assert policy["dense_reference"] == pytest.approx(curve)
    decisions = [r["guard"] for r in run.result.history if r["guard"]]
    assert decisions  # TINY takes a step after epoch 1, judged after 2.
    for decision in decisions:
        dense = curve[min(decision["epoch"], len(curve) - 1)]
        assert decision["reference"] >= dense - 1e-12


def test_by_default_the_baseline_trains_after_adp(tmp_path):
    lines = []
    options = experiment.TrainOptions(
        **dict(TINY, dense_baseline=True), run_dir=str(tmp_path / "run")
    )
    run = experiment.run_training(options, say=lines.append)
    starts = [line.split(":")[0] for line in lines]
    assert starts.index("test split") < starts.index("dense baseline")
    assert run.report["extra"]["config"]["policy"]["dense_reference"] is None
    assert run.report["dense_baseline"]["accuracy"] is not None


def test_removal_scale_reaches_the_policy():
    options = experiment.TrainOptions(removal_scale=2.0)
    assert experiment.policy_of(options).removal_scale == 2.0


@pytest.mark.parametrize("value", [None, 250])
def test_recovery_updates_reaches_the_policy(value):
    options = experiment.TrainOptions(recovery_updates=value)
    assert experiment.policy_of(options).recovery_updates == value


def test_the_final_check_holds_the_pruned_run_to_the_dense_baseline(tmp_path):
    lines = []
    options = experiment.TrainOptions(
        **dict(TINY, dense_baseline=True), run_dir=str(tmp_path / "run")
    )
    run = experiment.run_training(options, say=lines.append, warn=lines.append)
    budget = run.report["extra"]["budget"]
    # Recomputed from the two histories the report holds.
    pruned = run.report["history"][-1]["logs"]["val_accuracy"]
    dense = run.report["dense_baseline"]["history"][-1]["logs"]["val_accuracy"]
    assert budget["monitor"] == "val_accuracy"
    assert budget["value"] == pytest.approx(pruned)
    assert budget["dense"] == pytest.approx(dense)
    assert budget["shortfall"] == pytest.approx(dense - pruned)
    assert budget["budget"] == options.max_accuracy_drop
    assert budget["met"] == (dense - pruned <= options.max_accuracy_drop)
    said = [line for line in lines if "the dense baseline's" in line]
    assert len(said) == 1
    assert said[0].startswith("warning:") != budget["met"]
    assert "budget" in report.summary_table(run.report)


def test_no_final_check_without_a_baseline_or_a_guard(tmp_path):
    run = experiment.run_training(
        experiment.TrainOptions(**TINY, run_dir=str(tmp_path / "a"))
    )
    assert run.report["extra"]["budget"] is None
    run = experiment.run_training(
        experiment.TrainOptions(
            **dict(TINY, dense_baseline=True, max_accuracy_drop=None),
            run_dir=str(tmp_path / "b"),
        )
    )
    assert run.report["extra"]["budget"] is None
