"""Backup targets: where a vault's encrypted snapshots go, and the keys for them.

A target is a URL::

    /mnt/usb/phyassist                         a local path (another disk, a mounted share)
    sftp://user@host[:port]/dir                SFTP (``//abs/dir`` for an absolute path)
    s3://ACCESS_KEY@host[:port]/bucket/prefix  an S3-compatible store over https
    s3+http://ACCESS_KEY@host:port/bucket/...  the same over plain http (a LAN MinIO, tests)

Query parameters are passed to rclone's backend as options (``?key_file=~/.ssh/id_ed25519``,
``?known_hosts_file=~/.ssh/known_hosts``, ``?region=eu-west-1``). The one secret of a
target (SFTP password, S3 secret key) is kept apart from the URL.

The list of targets, secrets included, is stored encrypted in the vault (vault blob
``backup/targets``). The key of rclone's ``crypt`` layer is not stored anywhere: it is
derived from the vault's master key (HKDF), so the vault passphrase is the only secret a
counselor must remember, and the same key serves every target.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from engine.backup.rclone import Rclone, obscure
from engine.errors import InputRejected

TARGETS_BLOB = "backup/targets"
KEY_INFO = b"phyassist backup key v1"  # HKDF info: master key -> backup key
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    secret: str = ""  # SFTP password or S3 secret access key; "" = none (keys, local)

    @property
    def kind(self) -> str:
        return parse_url(self.url)[0]

    def public_dict(self) -> dict[str, str]:
        """What may be printed: no secret."""
        return {"name": self.name, "url": self.url, "kind": self.kind}


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name or ""):
        raise InputRejected(
            f"Invalid target name {name!r}: use 1-32 lowercase letters, digits, '-' or '_'."
        )
    return name


def parse_url(url: str) -> tuple[str, dict[str, str], str]:
    """(rclone backend type, backend options, root path on it) for a target URL."""
    if not url:
        raise InputRejected("A backup target needs a URL or a path.")
    if url.startswith("/") or url.startswith("~") or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return "local", {}, str(Path(path).expanduser())
    parts = urlsplit(url)
    options = {k: v for k, v in parse_qsl(parts.query)}
    for key in options:
        if not re.fullmatch(r"[a-z0-9_]{1,64}", key):
            raise InputRejected(f"Invalid option {key!r} in the target URL.")
    path = unquote(parts.path)
    if parts.scheme == "sftp":
        if not parts.hostname:
            raise InputRejected(f"{url!r}: an SFTP target needs a host (sftp://user@host/dir).")
        options = {"host": parts.hostname, "port": str(parts.port or 22), **options}
        if parts.username:
            options["user"] = unquote(parts.username)
        root = path[1:] if path.startswith("/") else path  # "//abs" -> "/abs", "/rel" -> "rel"
        return "sftp", options, root
    if parts.scheme in ("s3", "s3+http"):
        if not parts.hostname:
            raise InputRejected(f"{url!r}: an S3 target needs a host (s3://KEY@host/bucket).")
        scheme = "http" if parts.scheme == "s3+http" else "https"
        port = f":{parts.port}" if parts.port else ""
        options = {
            "provider": "Other",
            "endpoint": f"{scheme}://{parts.hostname}{port}",
            "force_path_style": "true",
            **options,
        }
        if parts.username:
            options["access_key_id"] = unquote(parts.username)
        root = path.strip("/")
        if not root:
            raise InputRejected(f"{url!r}: an S3 target needs a bucket (s3://KEY@host/bucket).")
        return "s3", options, root
    raise InputRejected(
        f"Unsupported backup target {url!r}: use a local path, sftp://, s3:// or s3+http://."
    )


@dataclass(frozen=True)
class BackupKeys:
    """rclone crypt's password and salt, derived from the one backup key."""

    backup_key: bytes

    def _sub(self, label: bytes) -> str:
        return hmac.new(self.backup_key, label, sha256).hexdigest()

    @property
    def password(self) -> str:
        return self._sub(b"rclone-crypt password")

    @property
    def salt(self) -> str:
        return self._sub(b"rclone-crypt password2")

    @property
    def fingerprint(self) -> str:
        """Short, non-secret check value printed on the recovery sheet."""
        return sha256(b"fingerprint" + self.backup_key).hexdigest()[:16]

    def recovery_code(self) -> str:
        """The backup key as base32 in groups of 4, for the printed recovery sheet."""
        text = base64.b32encode(self.backup_key).decode().rstrip("=")
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    @classmethod
    def from_recovery_code(cls, code: str) -> BackupKeys:
        text = re.sub(r"[\s-]", "", code).upper()
        try:
            raw = base64.b32decode(text + "=" * (-len(text) % 8))
        except ValueError:
            raise InputRejected("The recovery code is not valid (letters A-Z and 2-7).") from None
        if len(raw) != 32:
            raise InputRejected("The recovery code has the wrong length.")
        return cls(raw)


def rclone_for(target: Target, keys: BackupKeys | None) -> Rclone:
    """An :class:`Rclone` for ``target``, with the crypt layer when ``keys`` are given."""
    kind, options, root = parse_url(target.url)
    options = dict(options)
    if target.secret:
        field = "pass" if kind == "sftp" else "secret_access_key"
        options[field] = obscure(target.secret) if kind == "sftp" else target.secret
    if kind == "sftp":
        options.setdefault("shell_type", "none")  # plain SFTP; no remote shell commands
    return Rclone(
        target=target.name,
        base_type=kind,
        base_options=options,
        root=root,
        crypt_password=obscure(keys.password) if keys else "",
        crypt_salt=obscure(keys.salt) if keys else "",
    )


def load_targets(store) -> list[Target]:
    """The targets saved in the vault (encrypted vault blob), in the order they were added."""
    raw = store.read_vault_blob(TARGETS_BLOB)
    if not raw:
        return []
    return [Target(**row) for row in json.loads(raw.decode("utf-8"))]


def save_targets(store, targets: list[Target]) -> None:
    data = json.dumps([asdict(t) for t in targets], ensure_ascii=False).encode("utf-8")
    store.write_vault_blob(TARGETS_BLOB, data)


def keys_of(store) -> BackupKeys:
    """The vault's backup key (HKDF of its master key; same for every target)."""
    return BackupKeys(store.derive_key(KEY_INFO))
