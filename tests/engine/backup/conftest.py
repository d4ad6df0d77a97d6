"""Real backup servers on 127.0.0.1 (``rclone serve sftp|s3``), started by the tests.

Each server serves a fresh directory, so a test can scan exactly what reached the "remote"
machine. Vaults use scrypt n=2**10 (fast); the code paths are the production ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.backup.rclone import rclone_binary

PASSPHRASE = "correct horse battery"
SFTP_USER, SFTP_PASS = "counselor", "sftp-secret-pw"
S3_KEY, S3_SECRET = "PHYTESTKEY", "phy-test-secret-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone serve exited: {proc.stderr.read().decode()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("rclone serve did not start")


@dataclass
class Server:
    kind: str
    root: Path  # what the server stores on "its" disk
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.kind == "sftp":
            return f"sftp://{SFTP_USER}@127.0.0.1:{self.port}/backups"
        return f"s3+http://{S3_KEY}@127.0.0.1:{self.port}/phyassist/clinic-a"

    @property
    def secret(self) -> str:
        return SFTP_PASS if self.kind == "sftp" else S3_SECRET

    def start(self) -> None:
        args = [rclone_binary(), "serve", self.kind, str(self.root), "--addr",
                f"127.0.0.1:{self.port}"]  # fmt: skip
        if self.kind == "sftp":
            args += ["--user", SFTP_USER, "--pass", SFTP_PASS]
        else:
            (self.root / "phyassist").mkdir(exist_ok=True)  # the bucket
            args += ["--auth-key", f"{S3_KEY},{S3_SECRET}"]
        env = {"RCLONE_CONFIG": "", "PATH": os.environ.get("PATH", ""),
               "HOME": str(self.root.parent)}  # fmt: skip
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def _serve(kind: str) -> Server:
        root = tmp_path_factory.mktemp(f"remote-{kind}")
        server = Server(kind, root, free_port())
        server.start()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture
def env(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Passphrase and a cheap KDF for in-process CLI calls; returns PHYASSIST_HOME."""
    monkeypatch.setenv("PHYASSIST_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PHYASSIST_STORE__SCRYPT_LOG2_N", "10")
    return isolated_home


def encodings(secret: str) -> list[bytes]:
    forms = [secret.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le")]
    forms.append(json.dumps(secret, ensure_ascii=True)[1:-1].encode("ascii"))
    return forms


@pytest.fixture
def scan_for() -> Callable[[list[Path], list[str]], list[tuple[str, str]]]:
    return scan


def scan(roots: list[Path], secrets: list[str]) -> list[tuple[str, str]]:
    """(file, secret) for every file under ``roots`` holding a secret in any encoding."""
    needles = [(s, raw) for s in secrets for raw in encodings(s)]
    hits = []
    for root in roots:
        for base, _dirs, files in os.walk(root):
            for name in files:
                data = (Path(base) / name).read_bytes()
                hits += [(str(Path(base) / name), s) for s, raw in needles if raw in data]
    return hits
