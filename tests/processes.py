"""Subprocess helpers of the tests: JAX's shared compilation cache, and
killing a training process the way a crash would, for resume tests."""

import json
import os
import signal
import tempfile
import time

# XLA compiles every new shape (each rebuilt model's functions, each eager
# op) once per process; the tests' JAX subprocesses share JAX's persistent
# compilation cache, which changes no result and makes a run several times
# faster.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR",
        os.path.join(tempfile.gettempdir(), "keras_adp_tests_jax_cache"),
    ),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def kill_after_checkpoint(process, run_dir, checkpoint="checkpoint-0002",
                          timeout=300.0) -> str:
    """SIGKILLs `process` once `run_dir/LATEST` names `checkpoint` or a
    later one, and returns the checkpoint it was killed after.

    Args:
        process: a running `subprocess.Popen` training into `run_dir`.
        run_dir: a `pathlib.Path`, the run's directory.
        checkpoint: the checkpoint to wait for.
        timeout: seconds to wait before killing anyway.
    """
    latest = run_dir / "LATEST"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if latest.exists() and latest.read_text() >= checkpoint:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return latest.read_text()


def resumed_and_reference(tmp_path) -> tuple[dict, dict]:
    """The JSON summaries the kill-and-resume scripts write beside
    `killed.npz` (the resumed run) and `reference.npz` (the unkilled one)."""
    runs = []
    for name in ("killed.npz.json", "reference.npz.json"):
        with open(tmp_path / name) as handle:
            runs.append(json.load(handle))
    return runs[0], runs[1]
