"""End to end: the installed ``phyassist`` in a real terminal (tmux), the real embedded model.

create vault -> create patient -> analysis (real model, few tokens) -> edit -> save -> quit
-> relaunch -> unlock -> the note is there. Skips cleanly without tmux or the console script.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from platformdirs import user_cache_path

# Loads the real model and takes minutes on a busy 2-core box: model + slow (opt-in).
pytestmark = [pytest.mark.model, pytest.mark.slow]

PASSPHRASE = "tmux test passphrase"
QUESTION = "Since I failed the exam I cannot sleep and I worry all day."
SYMPTOM = "Sleep problems after exam failure"


class Tmux:
    def __init__(self, session: str, width: int = 120, height: int = 45) -> None:
        self.session, self.width, self.height = session, width, height

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.session,
                "-x",
                str(self.width),
                "-y",
                str(self.height),
                f"env -u COLUMNS -u LINES {exports} {command}; sleep 120",
            ],
            check=True,
        )
        subprocess.run(
            [
                "tmux",
                "resize-window",
                "-t",
                self.session,
                "-x",
                str(self.width),
                "-y",
                str(self.height),
            ],
            capture_output=True,
        )

    def keys(self, *keys: str, literal: bool = False) -> None:
        args = ["tmux", "send-keys", "-t", self.session]
        subprocess.run([*args, "-l", *keys] if literal else [*args, *keys], check=True)
        time.sleep(0.3)

    def text(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if needle in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{needle!r} did not appear; screen:\n{self.text()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.fixture
def phyassist_bin() -> str:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    exe = Path(sys.executable).with_name("phyassist")
    if not exe.exists():
        found = shutil.which("phyassist")
        if found is None:
            pytest.skip("the phyassist console script is not installed")
        exe = Path(found)
    return str(exe)


def test_note_survives_relaunch_with_real_model(phyassist_bin, isolated_home):
    env = {
        "PHYASSIST_HOME": str(isolated_home),
        "PHYASSIST_STORE__SCRYPT_LOG2_N": "10",
        "PHYASSIST_GENERATION__MAX_NEW_TOKENS": "24",
        "PHYASSIST_IDLE_LOCK_MINUTES": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TERM": "xterm-256color",
        "TZ": "UTC",
    }
    # Reuse the dequantized-weights cache (not patient data) so the model loads in seconds.
    shared_cache = user_cache_path("phyassist")
    if (shared_cache / "models").is_dir():
        env["PHYASSIST_CACHE_DIR"] = str(shared_cache)
    tmux = Tmux(f"phyassist-e2e-{uuid.uuid4().hex[:8]}")
    try:
        tmux.start(phyassist_bin, env)
        tmux.wait("Passphrase again", 30)
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.wait("New patient", 30)

        tmux.keys("C-n")
        tmux.wait("Name (required)")
        tmux.keys("Zhou", literal=True)
        tmux.keys("Enter")
        tmux.keys("22, student", literal=True)
        tmux.keys("C-s")
        tmux.wait("Demographics / 人口学资料: 22, student")

        tmux.keys("F3")
        tmux.keys(QUESTION, literal=True)
        tmux.keys("C-g")
        # the draft list appears once the real model finished its few tokens
        tmux.wait("Regen item", 300)
        assert "SmolLM2" in tmux.text()  # the status line names the model in use
        tmux.keys("e")  # the cursor starts on the symptom type: edit it in place
        tmux.keys("C-u")
        tmux.keys(SYMPTOM, literal=True)
        tmux.keys("Enter")
        tmux.wait(SYMPTOM)
        tmux.keys("C-s")
        tmux.wait("Note saved", 30)
        tmux.keys("C-q")
        time.sleep(2)
        tmux.kill()

        for path in Path(isolated_home, "data").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert QUESTION.encode() not in data and SYMPTOM.encode() not in data, path

        tmux.start(phyassist_bin, env)
        tmux.wait("Enter the passphrase", 30)
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.wait("1 note", 30)
        tmux.keys("Enter")
        screen = tmux.wait("Counseling Question", 30)
        assert QUESTION in screen
        screen = tmux.wait(f"Symptom Type: {SYMPTOM}", 10)
    finally:
        tmux.kill()
