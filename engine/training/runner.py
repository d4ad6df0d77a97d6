"""The parent side of training: build the job, run the worker, store the result.

``TrainingRun`` reads the patient from the (unlocked) store, turns notes and edits into
training data in memory, and starts ``python -m engine.training.worker`` with the job on its
stdin (plaintext only ever crosses a pipe). It yields the worker's progress as
``TrainingEvent`` objects. On success it opens the sealed adapter with the one-time key and
stores it as the next encrypted version with its card, makes it active and prunes versions
beyond ``limits.max_adapters_per_patient``. A cancelled, killed or failed run stores nothing:
the previous adapter stays active, and the run's private folder (sealed staging file, empty
trainer folder) is removed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import (
    PhyAssistError,
    TrainingCancelled,
    TrainingError,
    TrainingLimitExceeded,
)
from engine.model.adapters import AdapterRegistry, unpack_adapter
from engine.settings import Settings, load_settings
from engine.training.data import TrainingData, build_training_data
from engine.training.worker import JOB_VERSION, transfer_aad
from engine.trust.audit import record as audit_record  # trust: audit hook
from engine.vault.crypto import new_key, open_sealed

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR_NAME = "training-runs"
_ACTIVE_RUNS: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


@dataclass
class TrainingEvent:
    """One progress report from the worker (or the parent's own final steps)."""

    phase: str  # loading, prepared, sft, dpo, orpo, saving, done, stored, error
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainingEvent:
        known = {k: obj.get(k) for k in ("step", "total_steps") if obj.get(k) is not None}
        return cls(
            phase=str(obj.get("phase", "")),
            loss=obj.get("loss"),
            tokens_per_s=obj.get("tokens_per_s"),
            eta_s=obj.get("eta_s"),
            epoch=obj.get("epoch"),
            message=str(obj.get("message", "")),
            data=obj,
            **known,
        )


@dataclass
class StoredAdapter:
    version: int
    card: dict[str, Any]
    pruned: list[int]

    def message(self, limit: int) -> str:
        msg = f"Saved adapter v{self.version}"
        if self.pruned:
            msg += (
                f"; removed old version(s) {', '.join(f'v{v}' for v in self.pruned)} "
                f"(limits.max_adapters_per_patient = {limit})"
            )
        return msg


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / RUNS_DIR_NAME


def remove_stale_runs(settings: Settings, min_age_s: float = 60.0) -> int:
    """Remove run folders left by a crashed parent (they hold only sealed data)."""
    base = runs_dir(settings)
    removed = 0
    if not base.is_dir():
        return 0
    now = time.time()
    with _ACTIVE_LOCK:
        active = set(_ACTIVE_RUNS)
    for entry in base.iterdir():
        if entry.name in active:
            continue
        try:
            if now - entry.stat().st_mtime < min_age_s:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed


class TrainingRun:
    """One training run for one patient. Iterate ``events()``; ``cancel()`` from any thread."""

    def __init__(
        self,
        store: Any,
        patient_id: str,
        settings: Settings | None = None,
        *,
        overrides: dict[str, Any] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.store = store
        self.patient_id = patient_id
        self.settings = settings or getattr(store, "settings", None) or load_settings()
        self.overrides = dict(overrides or {})
        self.python = python
        self.run_id = uuid.uuid4().hex
        self.result: StoredAdapter | None = None
        self.summary: dict[str, Any] = {}
        self.signals: dict[str, Any] = {}  # what went in, per signal and note (for the card)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._proc: subprocess.Popen | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self.work_dir = runs_dir(self.settings) / self.run_id

    # -- the job ---------------------------------------------------------------------------

    def training_data(self) -> TrainingData:
        patient = self.store.load_patient(self.patient_id)
        # ``overrides["record_notes"]``: earlier notes in each training prompt (a parent-side
        # switch like ``domain_adapter``; default TRAIN_RECORD_NOTES)
        if "record_notes" in self.overrides:
            data = build_training_data(patient, int(self.overrides["record_notes"]))
        else:
            data = build_training_data(patient)
        self.signals = data.signals
        if not data.sft:
            raise TrainingError(
                "This patient has no saved notes with an Analysis yet; save a note first."
            )
        return data

    def _job(self, data: TrainingData, key: bytes) -> dict[str, Any]:
        s = self.settings
        return {
            "version": JOB_VERSION,
            "run_id": self.run_id,
            "patient_id": self.patient_id,
            "settings": {
                "model": s.model.model_dump(),
                "cache_dir": str(s.cache_dir),
                "data_dir": str(s.data_dir),
                "config_dir": str(s.config_dir),
            },
            "max_training_tokens": s.limits.max_training_tokens,
            "domain_adapter": self.domain_adapter(),
            "overrides": self.overrides,
            "transfer_key": base64.b64encode(key).decode("ascii"),
            "work_dir": str(self.work_dir),
            "staging_path": str(self.staging_path),
            **data.to_job(),
        }

    def domain_adapter(self) -> dict[str, str] | None:
        """The domain adapter the patient adapter is trained over (merged into the base in the
        worker; stacked under it at inference): path, name, hash. None: the bare base
        (no domain adapter for this model, or ``overrides["domain_adapter"] = False``)."""
        if self.overrides.get("domain_adapter", True) is False:
            return None
        from engine.model.adapters import domain_adapter_path
        from engine.model.stack import adapter_identity

        path = domain_adapter_path(self.settings.model)
        if path is None:
            return None
        return {"path": str(path), **adapter_identity(path)}

    @property
    def staging_path(self) -> Path:
        return self.work_dir / "adapter.sealed"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHYASSIST_PASSPHRASE")}
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            TMPDIR=str(self.work_dir / "tmp"),
            PYTHONUNBUFFERED="1",
        )
        # OpenMP threads that spin while waiting collapse throughput (7 vs 65 tokens/s
        # measured) when other processes share the cores; passive waiting costs little.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        return env

    # -- running -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the worker: terminate, then kill if it does not exit within 5 s."""
        self._cancelled.set()
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def events(self) -> Iterator[TrainingEvent]:
        """Run the worker and yield its progress; raises TrainingError unless it succeeded."""
        data = self.training_data()
        key = new_key()
        remove_stale_runs(self.settings)
        with _ACTIVE_LOCK:
            _ACTIVE_RUNS.add(self.run_id)
        try:
            self.work_dir.mkdir(parents=True, mode=0o700)
            os.chmod(self.work_dir.parent, 0o700)
            (self.work_dir / "tmp").mkdir(mode=0o700)
            yield from self._run(data, key)
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            with _ACTIVE_LOCK:
                _ACTIVE_RUNS.discard(self.run_id)

    def _run(self, data: TrainingData, key: bytes) -> Iterator[TrainingEvent]:
        if self.cancelled:
            raise TrainingCancelled("Training was cancelled; the previous adapter stays active.")
        job_data = self._job(data, key)
        job_data["started_at"] = time.time()  # the worker reports its startup time from here
        job = json.dumps(job_data, ensure_ascii=False).encode("utf-8")
        with self._lock:
            self._proc = subprocess.Popen(
                [self.python, "-m", "engine.training.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(),
                cwd=str(self.work_dir),
            )
        proc = self._proc
        drain = threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True)
        drain.start()
        feeder = threading.Thread(target=self._feed, args=(proc, job), daemon=True)
        feeder.start()
        done: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except ValueError:
                    continue  # not an event; the worker keeps stdout for events only
                if not isinstance(obj, dict):
                    continue
                event = TrainingEvent.from_json(obj)
                if event.phase == "done":
                    done = obj
                elif event.phase == "error":
                    error = obj
                yield event
        finally:
            if proc.poll() is None:
                if self.cancelled:
                    self.cancel()
                elif done is None:
                    proc.kill()  # the consumer stopped listening, or the worker went silent
            rc = proc.wait()
            drain.join(timeout=5)
        if self.cancelled:
            raise TrainingCancelled("Training was cancelled; the previous adapter stays active.")
        if error is not None:
            message = str(error.get("message") or "Training failed.")
            if error.get("kind") == "limit":
                raise TrainingLimitExceeded(message)
            raise TrainingError(f"{message} The previous adapter stays active.")
        if done is None or rc != 0:
            tail = " | ".join(list(self.stderr_tail)[-3:])
            raise TrainingError(
                f"The training process ended unexpectedly (exit code {rc}); the previous "
                f"adapter stays active.{' Last output: ' + tail if tail else ''}"
            )
        self.summary = done
        stored = self._store_result(done, key)
        self.result = stored
        audit_record(self.store, "adapter_trained", self.patient_id, f"v{stored.version}")  # trust
        msg = stored.message(self.settings.limits.max_adapters_per_patient)
        yield TrainingEvent(
            phase="stored",
            step=int(done.get("steps") or 0),
            total_steps=int(done.get("steps") or 0),
            loss=done.get("final_loss"),
            message=msg,
            data={"version": stored.version, "pruned": stored.pruned, "card": stored.card},
        )

    @staticmethod
    def _feed(proc: subprocess.Popen, job: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(job)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the worker died early; its exit code tells the story

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)

    def _store_result(self, done: dict[str, Any], key: bytes) -> StoredAdapter:
        try:
            sealed = self.staging_path.read_bytes()
        except FileNotFoundError as exc:
            raise TrainingError(
                "The training process reported success but left no adapter."
            ) from exc
        packed = open_sealed(
            key, sealed, transfer_aad(self.run_id, self.patient_id), label="the trained adapter"
        )
        config, state = unpack_adapter(packed)
        card = {
            "base_model": done.get("base_model"),
            "domain_adapter": done.get("domain_adapter"),
            "signals": self.signals,
            "examples": done.get("examples"),
            "preference_pairs": done.get("preference_pairs"),
            # public rows of the domain adapter's training data replayed among the notes
            "rehearsal_rows": done.get("rehearsal_rows", 0),
            "steps": done.get("steps"),
            "final_loss": done.get("final_loss"),
            "preference_steps": done.get("preference_steps"),
            "preference_pairs_used": done.get("preference_pairs_used"),
            "preference_loss": done.get("preference_loss"),
            "tokens": done.get("tokens"),
            "train_s": done.get("train_s"),
            "device": done.get("device"),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "hyperparameters": done.get("hyperparameters"),
        }
        return store_adapter(self.store, self.patient_id, config, state, card, self.settings)


def store_adapter(
    store: Any,
    patient_id: str,
    config: dict[str, Any],
    state_dict: dict[str, Any],
    card: dict[str, Any],
    settings: Settings,
) -> StoredAdapter:
    """Save as the next version, make it active, then prune beyond the per-patient limit.

    In that order: a kill before the pointer is written leaves the previous active version
    in place (it still exists), and pruning never deletes what the pointer names."""
    registry = AdapterRegistry(store)
    version = registry.save(patient_id, config, state_dict, card)
    registry.set_active(patient_id, version)
    pruned = registry.prune(patient_id, settings.limits.max_adapters_per_patient)
    card = registry.card(patient_id, version) or card
    return StoredAdapter(version=version, card=card, pruned=sorted(pruned))


def train_patient(
    store: Any,
    patient_id: str,
    settings: Settings | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> tuple[StoredAdapter, list[TrainingEvent]]:
    """Run training to the end (no UI): the stored adapter and every event seen."""
    run = TrainingRun(store, patient_id, settings, overrides=overrides)
    events = list(run.events())
    if run.result is None:  # pragma: no cover - events() raises instead
        raise PhyAssistError("Training finished without a result.")
    return run.result, events
