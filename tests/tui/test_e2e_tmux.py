"""End to end: the installed ``phyassist`` in a real terminal (tmux), the real embedded model.

create vault -> create patient -> analysis (real model, few tokens) -> edit -> save -> quit
-> relaunch -> unlock -> reopen -> the note is there. Skips cleanly without tmux or the
console script. 45-92 s measured on the shared 2-core box (load average 5-10) with the
dequantized-weights cache (the first run on a machine dequantizes the GGUF once, ~25 s
more), so it is in the default selection wherever tmux exists.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from platformdirs import user_cache_path

pytestmark = pytest.mark.model  # loads the embedded real model

# Waits are generous: a cold 2-core CI runner (first imports from a fresh virtualenv, byte
# code compiled on the fly) took over 30 s for the first screen once; a wait that runs out
# prints the screen and every thread's stack (see Tmux.diagnose).
FIRST_SCREEN_S = 120.0  # process start to the unlock screen (cold imports)
STEP_S = 60.0  # one UI step (a screen, a saved note, a clean exit)
MODEL_S = 600.0  # model load (first run: the GGUF is dequantized once) plus a few tokens

PASSPHRASE = "tmux test passphrase"
QUESTION = "Since I failed the exam I cannot sleep and I worry all day."
SYMPTOM = "Sleep problems after exam failure"
EXITED = "phyassist exited with status "


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
                f"env -u COLUMNS -u LINES {exports} {command}; echo {EXITED}$?; sleep 120",
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

    def text(self, history: bool = False) -> str:
        return subprocess.run(
            [
                "tmux",
                "capture-pane",
                "-p",
                *(["-S", "-200"] if history else []),
                "-t",
                self.session,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait(self, needle: str, timeout: float = STEP_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if needle in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{needle!r} did not appear; screen:\n{self.diagnose()}")

    def wait_gone(self, needle: str, timeout: float = STEP_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if needle not in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{needle!r} did not go away; screen:\n{self.diagnose()}")

    def diagnose(self) -> str:
        """The screen, then every thread's stack (faulthandler on SIGABRT) if the app hung."""
        screen = self.text()
        pane = subprocess.run(
            ["tmux", "list-panes", "-t", self.session, "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        children = subprocess.run(
            ["pgrep", "-P", pane[0]] if pane else ["true"], capture_output=True, text=True
        ).stdout.split()
        for pid in children:  # the app this test started (env execs phyassist)
            os.kill(int(pid), signal.SIGABRT)
        time.sleep(2)
        return f"{screen}\n--- after SIGABRT (thread stacks) ---\n{self.text(history=True)}"

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.fixture
def phyassist_bin() -> str:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the end-to-end terminal test drives the app in tmux")
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
        "PYTHONFAULTHANDLER": "1",  # a hung app dumps its threads on SIGABRT (diagnose())
    }
    # Reuse the dequantized-weights cache (public weights, never patient data) so the model
    # loads in seconds; tests/conftest.py points PHYASSIST_CACHE_DIR at it.
    env["PHYASSIST_CACHE_DIR"] = os.environ.get(
        "PHYASSIST_CACHE_DIR", str(user_cache_path("phyassist"))
    )
    tmux = Tmux(f"phyassist-e2e-{uuid.uuid4().hex[:8]}")
    try:
        tmux.start(phyassist_bin, env)
        tmux.wait("Passphrase again", FIRST_SCREEN_S)
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.wait("New patient")

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
        tmux.wait("^s Save", MODEL_S)  # the Footer's short label once a draft is there
        assert "SmolLM2" in tmux.text()  # the status line names the model in use
        tmux.keys("e")  # the cursor starts on the symptom type: edit it in place
        tmux.wait("Cancel edit")  # the editor has focus (its Esc hint is in the footer)
        tmux.keys("C-u")
        tmux.wait("Item text")  # the empty editor's placeholder
        tmux.keys(SYMPTOM, literal=True)
        tmux.wait(SYMPTOM)
        tmux.keys("Enter")
        tmux.wait_gone("Cancel edit")
        tmux.keys("C-s")
        tmux.wait("Note saved")
        tmux.keys("C-q")
        assert f"{EXITED}0" in tmux.wait(EXITED)  # quit cleanly (draft saved, vault closed)
        tmux.kill()

        files = [path for path in Path(isolated_home).rglob("*") if path.is_file()]
        assert files
        for path in files:  # nothing the counselor typed is readable on disk
            data = path.read_bytes()
            assert QUESTION.encode() not in data and SYMPTOM.encode() not in data, path

        tmux.start(phyassist_bin, env)
        tmux.wait("Enter the passphrase", FIRST_SCREEN_S)
        tmux.keys(PASSPHRASE, literal=True)
        tmux.keys("Enter")
        tmux.wait("1 note")
        tmux.keys("Enter")
        screen = tmux.wait("Counseling Question")
        assert QUESTION in screen
        screen = tmux.wait(f"Symptom Type: {SYMPTOM}")
    finally:
        tmux.kill()
