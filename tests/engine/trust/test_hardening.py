"""harden_process: no core dumps, not dumpable, private umask (checked in a child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

CODE = """
import json, os, resource, tempfile
from engine.trust.hardening import harden_process, is_dumpable
before = is_dumpable()
applied = harden_process()
fd, path = tempfile.mkstemp()
os.close(fd)
print(json.dumps({
    "applied": applied,
    "before": before,
    "dumpable": is_dumpable(),
    "core": resource.getrlimit(resource.RLIMIT_CORE),
    "temp_mode": os.stat(path).st_mode & 0o777,
    "new_file_mode": (open(path + ".x", "w").close(), os.stat(path + ".x").st_mode & 0o777)[1],
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")
def test_harden_process(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True
    )
    got = json.loads(out.stdout)
    assert got["applied"] == ["no-core-dumps", "not-dumpable", "umask-077"]
    assert got["before"] is True and got["dumpable"] is False
    assert got["core"] == [0, 0]
    assert got["new_file_mode"] == 0o600  # open() with umask 077: private, not 0644
