"""The training worker starts as a process (its hardening runs before it reads the job)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO


def test_worker_process_starts_and_reports_a_bad_job():
    root = REPO
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "engine.training.worker"],
        input="not a job",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=root,
    )
    assert "AttributeError" not in done.stderr, done.stderr[-500:]
    assert '"phase": "error"' in done.stdout  # it got as far as reading the job
