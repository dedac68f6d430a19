"""`ADPTrainer` under `tf.distribute` strategies.

Each run is its own process (`scripts/distributed_worker.py`): logical
devices and `TF_CONFIG` must be set before TensorFlow initialises. Every run
trains the same tiny model on the same data with the same seed. The model
has no Dropout and a synchronized BatchNormalization, so that splitting each
batch of 32 over two replicas changes only the order of floating point
sums: the distributed runs must measure the same densities, take the same
pruning steps and end at the same widths as the single-device run, with
weights equal up to rounding. (With an unsynchronized BatchNormalization
each replica normalises with the statistics of its half batch, and Dropout
draws other masks per replica, so losses, densities and weights would drift
apart and equal widths would be luck.)
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(
    os.path.dirname(__file__), "scripts", "distributed_worker.py"
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 400
CHECKPOINTS = ["LATEST", "checkpoint-0003", "checkpoint-0004"]


def _environment(**extra):
    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "TF_CONFIG"
    }
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = REPO + (os.pathsep + path if path else "")
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    environment.update(extra)
    return environment


def _run(jobs):
    """Run `(argv, environment)` jobs at once; their exit codes and output.

    A job still running after TIMEOUT_S (e.g. a worker waiting for a peer
    that crashed) is killed, with all the others, and the test fails.
    """
    processes = [
        subprocess.Popen(
            [sys.executable, SCRIPT, *argv],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for argv, environment in jobs
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.communicate()
        pytest.fail(f"a distributed run took longer than {TIMEOUT_S} s")
    return [process.returncode for process in processes], outputs


def _record(output):
    with open(output + ".json") as handle:
        record = json.load(handle)
    with np.load(output + ".npz") as weights:
        record["weights"] = [weights[name] for name in weights.files]
    return record


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def _workers(tmp_path, run_dirs, tag, resume=False):
    """Start a two-worker MultiWorkerMirroredStrategy run on this host."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    jobs = []
    for index, run_dir in enumerate(run_dirs):
        scratch = tmp_path / f"{tag}_tmp{index}"
        scratch.mkdir()
        task = {"type": "worker", "index": index}
        config = {"cluster": cluster, "task": task}
        argv = [
            "multiworker",
            str(run_dir),
            str(tmp_path / f"{tag}{index}"),
            *(["--resume"] if resume else []),
        ]
        jobs.append(
            (
                argv,
                _environment(TF_CONFIG=json.dumps(config), TMPDIR=str(scratch)),
            )
        )
    return _run(jobs)


def _assert_same_run(record, reference):
    assert record["widths"] == reference["widths"]
    assert record["steps"] == reference["steps"] > 0
    assert record["iterations"] == reference["iterations"]
    for densities, expected in zip(record["density"], reference["density"]):
        assert densities == pytest.approx(expected, abs=1e-4)
    assert record["loss"] == pytest.approx(reference["loss"], abs=1e-4)
    assert len(record["weights"]) == len(reference["weights"])
    for weight, expected in zip(record["weights"], reference["weights"]):
        np.testing.assert_allclose(weight, expected, atol=1e-4)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """The reference: the same run with no strategy."""
    root = tmp_path_factory.mktemp("single")
    (code,), (output,) = _run(
        [(["single", str(root / "run"), str(root / "out")], _environment())]
    )
    assert code == 0, output
    return _record(str(root / "out"))


def test_mirrored_strategy_reaches_the_single_device_widths(
    single_device, tmp_path
):
    run_dir = tmp_path / "run"
    (code,), (output,) = _run(
        [
            (
                ["mirrored", str(run_dir), str(tmp_path / "out")],
                _environment(),
            )
        ]
    )
    assert code == 0, output
    record = _record(str(tmp_path / "out"))
    assert record["replicas"] == 2
    _assert_same_run(record, single_device)
    # Rebuilt models and their optimizers live in the strategy.
    assert record["distributed_weights"] and record["distributed_optimizer"]
    # Density counts are gathered from both replicas: all 64 samples.
    assert record["probe_samples"] == [64, 64]
    assert sorted(os.listdir(run_dir)) == CHECKPOINTS


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory, single_device):
    """A two-worker run; each worker has its own run_dir and TMPDIR."""
    root = tmp_path_factory.mktemp("multi_worker")
    run_dirs = [root / "chief_run", root / "worker_run"]
    codes, outputs = _workers(root, run_dirs, "out")
    assert codes == [0, 0], "\n\n".join(outputs)
    return root, run_dirs, [_record(str(root / f"out{i}")) for i in (0, 1)]


@pytest.mark.slow
def test_multi_worker_strategy_reaches_the_single_device_widths(
    multi_worker, single_device
):
    _, _, records = multi_worker
    assert [record["is_chief"] for record in records] == [True, False]
    for record in records:
        assert record["replicas"] == 2
        _assert_same_run(record, single_device)
        assert record["distributed_weights"]
        assert record["distributed_optimizer"]
        assert record["probe_samples"] == [64, 64]


@pytest.mark.slow
def test_multi_worker_checkpoints_are_written_by_the_chief_only(
    multi_worker,
):
    root, (chief_dir, worker_dir), _ = multi_worker
    assert sorted(os.listdir(chief_dir)) == CHECKPOINTS
    assert not worker_dir.exists()
    # The worker saved into a temporary directory, deleted at once.
    assert os.listdir(root / "out_tmp1") == []


@pytest.mark.slow
def test_multi_worker_run_resumes_from_a_shared_run_dir(
    multi_worker, single_device, tmp_path
):
    _, (chief_dir, _), _ = multi_worker
    codes, outputs = _workers(
        tmp_path, [chief_dir, chief_dir], "out", resume=True
    )
    assert codes == [0, 0], "\n\n".join(outputs)
    for index in (0, 1):
        record = _record(str(tmp_path / f"out{index}"))
        assert record["widths"] == single_device["widths"]
        assert record["iterations"] == single_device["iterations"]


@pytest.mark.slow
def test_multi_worker_resume_refuses_workers_that_see_other_checkpoints(
    multi_worker, tmp_path
):
    _, (chief_dir, _), _ = multi_worker
    codes, outputs = _workers(
        tmp_path, [chief_dir, tmp_path / "empty"], "out", resume=True
    )
    assert codes[0] != 0 and codes[1] != 0
    for output in outputs:
        assert "Workers see different newest checkpoints" in output
        assert "shared by every worker" in output
