"""LoRA adapters: the encrypted per-patient registry and switching on one loaded base model.

At rest, a patient's adapter version N is two encrypted store blobs: ``adapter/vN`` (an
in-memory tar holding ``adapter_config.json`` + ``adapter_model.safetensors``, see
``pack_adapter``) and ``adapter/vN.card`` (a JSON card: when, on what, loss …). They are
decrypted into memory and applied with PEFT from there; no plaintext file is ever written.

The base model stays loaded. The first adapter wraps it in a ``PeftModel`` (LoRA layers are
injected in place); later adapters are added by name, switched with ``set_adapter``, and
"base" disables the adapter layers. A small LRU bounds how many stay resident.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from engine.errors import AdapterLoadError, AdapterNotFound

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MAX_ADAPTER_BYTES = 4 << 30  # a LoRA of a 47B model at r=64 is well under this

ACTIVE_KIND = "adapter/active"  # optional: the version number chosen by a rollback
_VERSION_KIND = re.compile(r"^adapter/v(\d+)$")


class BlobStore(Protocol):
    """The part of ``engine.vault.store.Store`` the registry uses."""

    def read_blob(self, patient_id: str, kind: str) -> bytes | None: ...
    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None: ...
    def list_blobs(self, patient_id: str, prefix: str = "") -> list[str]: ...
    def set_has_adapter(self, patient_id: str, value: bool) -> None: ...


# The container --------------------------------------------------------------------------------


#: Adapter weights are stored at rest in this dtype (half the bytes of fp32: half the decryption
#: and unpacking time on a switch, bench/RESULTS.md). Version 1 containers (fp32 weights, no
#: ``phyassist_adapter`` metadata) still load.
STORAGE_DTYPE = "bfloat16"
STACK_SEP = "+"  # AdapterManager.active for several adapters at once: "domain+patient-…"
CONTAINER_VERSION = 2
_VERSION_KEY = "phyassist_adapter"
_ST_DTYPES = {  # safetensors dtype codes -> torch dtype names
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def pack_adapter(
    config: dict[str, Any], state_dict: dict[str, Any], *, dtype: str | None = None
) -> bytes:
    """A PEFT adapter as bytes: a tar with the two files ``save_pretrained`` would write.

    ``dtype`` (a torch dtype name such as ``"bfloat16"``) converts every floating-point tensor;
    None keeps them as they are. The safetensors metadata records the container version.
    """
    import torch
    from safetensors.torch import save

    target = getattr(torch, dtype) if dtype else None
    config_bytes = json.dumps(_jsonable(config), ensure_ascii=False, indent=2).encode("utf-8")
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().to("cpu")
        if target is not None and value.is_floating_point():
            value = value.to(target)
        tensors[key] = value.contiguous()
    metadata = {"format": "pt", _VERSION_KEY: str(CONTAINER_VERSION)}
    if dtype:
        metadata["stored_dtype"] = dtype
    weights = save(tensors, metadata=metadata)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((CONFIG_NAME, config_bytes), (WEIGHTS_NAME, weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack_adapter(
    data: bytes | bytearray | memoryview, *, device: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config_dict, state_dict)`` from ``pack_adapter`` bytes; AdapterLoadError if bad.

    No copy of the weights is made on the host: the tensors are read-only views of ``data``
    (callers copy them into the model). With ``device`` the weights go there in one transfer
    and the tensors are views of that one device buffer.
    """
    if len(data) > MAX_ADAPTER_BYTES:
        raise AdapterLoadError("The adapter is larger than any LoRA adapter should be.")
    view = memoryview(data).cast("B")
    files: dict[str, memoryview] = {}
    try:
        with tarfile.open(fileobj=_ViewFile(view), mode="r:") as tar:
            for member in tar.getmembers():
                if not member.isfile() or member.name not in (CONFIG_NAME, WEIGHTS_NAME):
                    raise AdapterLoadError(f"Unexpected entry {member.name!r} in the adapter.")
                start, size = member.offset_data, member.size
                if start < 0 or size < 0 or start + size > len(view):
                    raise AdapterLoadError(f"Unreadable entry {member.name!r} in the adapter.")
                files[member.name] = view[start : start + size]
    except tarfile.TarError as exc:
        raise AdapterLoadError(f"The adapter container is damaged: {exc}") from exc
    missing = {CONFIG_NAME, WEIGHTS_NAME} - files.keys()
    if missing:
        raise AdapterLoadError(f"The adapter lacks {', '.join(sorted(missing))}.")
    try:
        config = json.loads(bytes(files[CONFIG_NAME]).decode("utf-8"))
        state = _read_safetensors(files[WEIGHTS_NAME], device)
    except AdapterLoadError:
        raise
    except Exception as exc:
        raise AdapterLoadError(f"The adapter files cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterLoadError("The adapter configuration is not a JSON object.")
    return config, state


class _ViewFile(io.RawIOBase):
    """A read-only file over a memoryview (``io.BytesIO`` would copy anything but ``bytes``)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _read_safetensors(buf: memoryview, device: Any = None) -> dict[str, Any]:
    """Tensors of a safetensors buffer as views of it (the format: u64 header length, JSON
    header of dtype/shape/byte offsets, then the data). ``safetensors.torch.load`` copies every
    tensor twice, and ``safe_open`` needs a file, which patient data must never become."""
    import warnings

    import torch

    if len(buf) < 8:
        raise ValueError("truncated safetensors header")
    n = int.from_bytes(buf[:8], "little")
    if n > len(buf) - 8:
        raise ValueError("safetensors header longer than the file")
    header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise ValueError("safetensors metadata is not a JSON object")
    version = meta.get(_VERSION_KEY, "1")
    if not str(version).isdigit() or int(version) > CONTAINER_VERSION:
        raise AdapterLoadError(
            f"The adapter was written by a newer PhyAssist (format {version}); update PhyAssist."
        )
    body = buf[8 + n :]
    flat = None
    if device is not None and len(body):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only buffer: we never write it
            flat = torch.frombuffer(body, dtype=torch.uint8).to(device)
    state: dict[str, Any] = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            raise ValueError(f"tensor {key!r}: unknown dtype {entry!r:.80}")
        dtype = getattr(torch, _ST_DTYPES[entry["dtype"]])
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        ):
            raise ValueError(f"tensor {key!r}: malformed entry")
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(body) or end - begin != numel * itemsize:
            raise ValueError(f"tensor {key!r}: byte range does not match its shape")
        if numel == 0:
            tensor = torch.empty(shape, dtype=dtype, device=device or "cpu")
        elif flat is not None:
            part = flat[begin:end]
            tensor = (part if begin % itemsize == 0 else part.clone()).view(dtype).view(shape)
        else:
            raw = body[begin:end] if begin % itemsize == 0 else bytearray(body[begin:end])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.frombuffer(raw, dtype=dtype).view(shape)
        state[key] = tensor
    return state


def read_adapter_dir(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A plain PEFT directory (shipped domain adapters; public, not patient data)."""
    from safetensors.torch import load_file

    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise AdapterLoadError(
            f"{path} is not a PEFT adapter directory ({CONFIG_NAME} + {WEIGHTS_NAME})."
        )
    try:
        return json.loads(config_path.read_text(encoding="utf-8")), load_file(weights_path)
    except Exception as exc:
        raise AdapterLoadError(f"The adapter in {path} cannot be read: {exc}") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, str | int | float | bool):
        return value.value  # enums (PeftType, TaskType)
    return value


def resolve_domain_adapter(
    setting: str | None, model_spec: str | None = None, adapters_dir: Path | None = None
) -> Path | None:
    """``settings.model.domain_adapter`` as a directory: a path, "auto" (the shipped one made
    for ``model_spec`` under ``adapters_dir``, see ``shipped_domain_adapter``) or None/"" (no
    domain adapter)."""
    if not setting:
        return None
    if setting == "auto":
        return shipped_domain_adapter(model_spec, adapters_dir)
    path = Path(setting).expanduser()
    if not path.is_dir():
        raise AdapterLoadError(f"Domain adapter not found: {path}")
    return path


def domain_adapter_path(model: Any) -> Path | None:
    """The domain adapter of ``settings.model`` (``domain_adapter``, ``spec``,
    ``adapters_dir``): the one place inference, stacking and training read it from."""
    return resolve_domain_adapter(model.domain_adapter, model.spec, model.adapters_dir)


def shipped_adapters_dir(adapters_dir: Path | None = None) -> Path:
    """``settings.model.adapters_dir``, or the source tree's ``adapters/`` when it is None."""
    from engine.settings import default_adapters_dir

    return Path(adapters_dir).expanduser() if adapters_dir else default_adapters_dir()


def shipped_domain_adapter(
    model_spec: str | None = None, adapters_dir: Path | None = None
) -> Path | None:
    """The adapter under ``adapters_dir`` (``shipped_adapters_dir``) whose
    ``base_model_name_or_path`` is ``model_spec`` (``domain`` first, then by name); with no
    spec, the first one.

    A shipped adapter is trained for one base model: loading it onto another one (a local
    Mixtral, say) would fail or, worse, silently change its answers.
    """
    root = shipped_adapters_dir(adapters_dir)
    if not root.is_dir():
        return None
    preferred = root / "domain"
    others = sorted(p for p in root.iterdir() if p != preferred)
    for candidate in [preferred, *others]:
        config_path = candidate / CONFIG_NAME
        if not config_path.is_file():
            continue
        if model_spec is None:
            return candidate
        try:
            base = json.loads(config_path.read_text(encoding="utf-8")).get(
                "base_model_name_or_path"
            )
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(base, str) and base.strip().lower() == model_spec.strip().lower():
            return candidate
    return None


# The registry (encrypted store blobs) ---------------------------------------------------------


class AdapterRegistry:
    """A patient's adapter versions, as encrypted blobs in the store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @staticmethod
    def kind(version: int) -> str:
        return f"adapter/v{version}"

    def versions(self, patient_id: str) -> list[int]:
        kinds = self.store.list_blobs(patient_id, "adapter/")
        return sorted(int(m.group(1)) for k in kinds if (m := _VERSION_KIND.match(k)))

    def newest(self, patient_id: str) -> int | None:
        versions = self.versions(patient_id)
        return versions[-1] if versions else None

    def active(self, patient_id: str) -> int | None:
        """The version to apply: the one ``adapter/active`` names (a rollback), else the
        newest; None when the patient has no adapter. The only reader of that pointer."""
        versions = self.versions(patient_id)
        if not versions:
            return None
        raw = self.store.read_blob(patient_id, ACTIVE_KIND)
        if raw is not None:
            try:
                chosen = int(raw.decode("ascii").strip())
            except ValueError:  # UnicodeDecodeError included
                chosen = None
            if chosen in versions:
                return chosen
        return versions[-1]

    def set_active(self, patient_id: str, version: int) -> None:
        """Point ``adapter/active`` at ``version`` (a stored one); the only writer of it."""
        if version not in self.versions(patient_id):
            raise AdapterNotFound(f"This patient has no adapter v{version}.")
        self.store.write_blob(patient_id, ACTIVE_KIND, str(version).encode("ascii"))
        self.store.set_has_adapter(patient_id, True)

    def read(self, patient_id: str, version: int) -> tuple[dict[str, Any], dict[str, Any]]:
        data = self.store.read_blob(patient_id, self.kind(version))
        if data is None:
            raise AdapterNotFound(f"This patient has no adapter v{version}.")
        return unpack_adapter(data)

    def read_raw(self, patient_id: str, version: int) -> bytes:
        data = self.store.read_blob(patient_id, self.kind(version))
        if data is None:
            raise AdapterNotFound(f"This patient has no adapter v{version}.")
        return data

    def card(self, patient_id: str, version: int) -> dict[str, Any] | None:
        data = self.store.read_blob(patient_id, self.kind(version) + ".card")
        if data is None:
            return None
        try:
            card = json.loads(data.decode("utf-8"))
        except ValueError:
            return None
        return card if isinstance(card, dict) else None

    def save(
        self,
        patient_id: str,
        config: dict[str, Any],
        state_dict: dict[str, Any],
        card: dict[str, Any] | None = None,
        *,
        keep: int | None = None,
        dtype: str | None = STORAGE_DTYPE,
    ) -> int:
        """Store a new version (weights first, card second) and return its number.

        ``keep`` bounds how many versions stay; older ones are deleted when the store can.
        Floating-point weights are stored as ``dtype`` (bf16 by default; None keeps them).
        """
        version = (self.newest(patient_id) or 0) + 1
        self.store.write_blob(
            patient_id, self.kind(version), pack_adapter(config, state_dict, dtype=dtype)
        )
        card = dict(card or {}, version=version)
        self.store.write_blob(
            patient_id,
            self.kind(version) + ".card",
            json.dumps(_jsonable(card), ensure_ascii=False).encode("utf-8"),
        )
        self.store.set_has_adapter(patient_id, True)
        if keep is not None:
            self.prune(patient_id, keep)
        return version

    def prune(self, patient_id: str, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions (never the active one); the deleted.

        Callers that also move the active pointer prune after writing it, so a crash in
        between never leaves the pointer naming a deleted version."""
        delete = getattr(self.store, "delete_blob", None)
        if not callable(delete):
            return []
        active = self.active(patient_id)
        gone = [v for v in self.versions(patient_id)[:-keep] if v != active]
        for old in gone:
            delete(patient_id, self.kind(old))
            delete(patient_id, self.kind(old) + ".card")
        return gone


# Switching on a loaded model ------------------------------------------------------------------


def _peft_config(config: dict[str, Any]) -> Any:
    from peft import PeftConfig

    cfg = dict(config)
    cfg.pop("base_model_name_or_path", None)  # never fetch anything by name
    cfg.pop("revision", None)
    cfg["inference_mode"] = True
    try:
        return PeftConfig.from_peft_type(**cfg)
    except Exception as exc:
        raise AdapterLoadError(f"The adapter configuration is not usable: {exc}") from exc


class AdapterManager:
    """Keeps one base model and switches LoRA adapters on it by name.

    One manager per loaded model (see ``manager_for``): two managers wrapping the same base
    would nest PEFT wrappers.
    """

    def __init__(self, base_model: Any, lock: threading.RLock | None = None, max_resident: int = 4):
        self.base = base_model
        self.peft: Any | None = None
        self.lock = lock or threading.RLock()
        self.max_resident = max_resident
        self.active: str | None = None  # None = the base model
        self._resident: OrderedDict[str, None] = OrderedDict()

    @property
    def model(self) -> Any:
        """The model to generate with (the PeftModel once any adapter was loaded)."""
        return self.peft if self.peft is not None else self.base

    def resident(self) -> list[str]:
        return list(self._resident)

    def load(self, name: str, config: dict[str, Any], state_dict: dict[str, Any]) -> None:
        """Add an adapter from an in-memory config + state dict (no files involved)."""
        from peft import get_peft_model, set_peft_model_state_dict

        peft_config = _peft_config(config)
        with self.lock:
            if name in self._resident:
                self._resident.move_to_end(name)
                return
            self._evict(room_for=1)
            try:
                if self.peft is None:
                    self.peft = get_peft_model(self.base, peft_config, adapter_name=name)
                else:
                    self.peft.add_adapter(name, peft_config)
                result = set_peft_model_state_dict(self.peft, state_dict, adapter_name=name)
            except AdapterLoadError:
                raise
            except Exception as exc:
                self._forget(name)
                raise AdapterLoadError(f"The adapter does not fit this model: {exc}") from exc
            unexpected = list(getattr(result, "unexpected_keys", []) or [])
            loaded_keys = [k for k in state_dict if "lora_" in k or "modules_to_save" in k]
            if unexpected or not loaded_keys:
                self._forget(name)
                detail = f"unexpected weights {unexpected[:3]}" if unexpected else "no LoRA weights"
                raise AdapterLoadError(f"The adapter does not fit this model ({detail}).")
            self._resident[name] = None
            self.peft.eval()
            self._apply(self.active)  # PEFT activates a new adapter; keep what was active

    def _forget(self, name: str) -> None:
        if self.peft is not None and name in getattr(self.peft, "peft_config", {}):
            try:
                if len(self.peft.peft_config) > 1:
                    other = next(n for n in self.peft.peft_config if n != name)
                    self.peft.set_adapter(other)
                    self.peft.delete_adapter(name)
                else:
                    self.peft.base_model.disable_adapter_layers()
            except Exception:
                pass
        self._resident.pop(name, None)

    def _evict(self, room_for: int) -> None:
        while len(self._resident) + room_for > self.max_resident:
            live = self.active_parts()
            victim = next((n for n in self._resident if n not in live), None)
            if victim is None:
                return
            self._resident.pop(victim)
            if self.peft is not None:
                if self.active is not None:
                    self._apply(self.active)
                else:
                    keep = next(iter(self._resident), None)
                    if keep is not None:
                        self.peft.set_adapter(keep)
                if len(self.peft.peft_config) > 1:
                    self.peft.delete_adapter(victim)

    def _apply(self, name: str | None) -> None:
        if self.peft is None:
            return
        if name is None:
            self.peft.base_model.disable_adapter_layers()
        else:
            self.peft.base_model.enable_adapter_layers()
            parts = name.split(STACK_SEP)
            if len(parts) > 1:  # LoraModel takes a list: every listed adapter's delta is added
                self.peft.base_model.set_adapter(parts)
            else:
                self.peft.set_adapter(name)
        self.peft.eval()

    def active_parts(self) -> list[str]:
        """The adapters in use: one name, the parts of a stack, or none (the base)."""
        return self.active.split(STACK_SEP) if self.active else []

    def activate_stack(self, names: list[str]) -> None:
        """Use several loaded adapters at once (learning: a patient adapter over the domain
        one). LoRA deltas add, so the result is base + each adapter's B·A; ``active`` reads
        ``"a+b"``."""
        with self.lock:
            missing = [n for n in names if n not in self._resident]
            if missing:
                raise AdapterNotFound(f"Adapter {missing[0]!r} is not loaded.")
            if not names:
                return self.activate(None)
            self._apply(STACK_SEP.join(names))
            self.active = STACK_SEP.join(names)
            for n in names:
                self._resident.move_to_end(n)

    def activate(self, name: str | None) -> None:
        """Use adapter ``name`` (already loaded), or the base model for None."""
        with self.lock:
            if name is not None and name not in self._resident:
                raise AdapterNotFound(f"Adapter {name!r} is not loaded.")
            self._apply(name)
            self.active = name
            if name is not None:
                self._resident.move_to_end(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._resident


_MANAGERS_LOCK = threading.Lock()


def manager_for(loaded: Any) -> AdapterManager:
    """The one AdapterManager of a ``LoadedModel`` (created on first use)."""
    with _MANAGERS_LOCK:
        manager = getattr(loaded, "adapters", None)
        if manager is None:
            manager = AdapterManager(loaded.model, lock=loaded.lock)
            loaded.adapters = manager
        return manager
