"""Killing a training process the way a crash would, for resume tests."""

import signal
import time


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
