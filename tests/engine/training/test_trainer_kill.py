"""SIGKILL the trainer, or the app while it trains, at random moments.

``trainer_kill_driver.py`` is the app's side: it holds the vault open and runs the real
training subprocess (``engine.training.runner`` -> ``python -m engine.training.worker``) on a
tiny 2-layer model. Each run first trains the patient's adapter to the end once (v1, the
"previous adapter"), then repeatedly starts a training run and kills, at a random moment
between the start and a little past the time a whole run takes,

* the trainer subprocess (the app survives and must report a clean failure), or
* the app itself (half the time the trainer too, as in a power loss; otherwise the
  orphaned trainer must exit on its own).

After each kill, the vault is reopened (read-only next to the live app, as the writer after
the app died) and:

* the active adapter is the last one the app acknowledged as stored; only a kill of the app
  in the instant between storing a finished adapter and acknowledging it may have made the
  new, complete version active. After a trainer kill it is always the previous one;
* the active adapter decrypts, unpacks and loads onto the model (a forward pass runs);
* every blob of the patient decrypts, ``damaged_patients()`` is empty;
* no distinctive string from the patient's notes is in any file under the data directory
  or the temp directory (UTF-8 or UTF-16), stale run folders included; a trainer kill
  leaves no run folder at all.

Runs: ``PHYASSIST_KILL_RUNS`` (default 2 here; 200 in the slow test unless set).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from engine.model.adapters import AdapterManager, AdapterRegistry
from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.settings import Limits, ModelSettings, StoreSettings, load_settings
from engine.training.runner import remove_stale_runs, runs_dir
from engine.vault.store import Store
from tests.support import REPO

pytestmark = pytest.mark.model  # the tiny model borrows the embedded model's tokenizer

ROOT = REPO
# run as a module of this checkout (PYTHONPATH=ROOT)
DRIVER = "tests.engine.training.trainer_kill_driver"
PASSPHRASE = "trainer kill passphrase"


def kill_runs(default: int) -> int:
    return int(os.environ.get("PHYASSIST_KILL_RUNS", default))


def progress(stats: dict) -> None:
    """One JSON line per run to ``PHYASSIST_KILL_LOG`` (if set): a long run can be followed."""
    path = os.environ.get("PHYASSIST_KILL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": round(time.time(), 1), **stats}) + "\n")


def _needles(secrets: list[str]) -> list[bytes]:
    return [s.encode(enc) for s in secrets for enc in ("utf-8", "utf-16-le")]


def _plaintext_hits(roots: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for root in roots:
        for base, _dirs, files in os.walk(root):
            for name in files:
                path = Path(base) / name
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [str(path) for n in needles if n in data]
    return hits


class Driver:
    """One app process (trainer_kill_driver.py) and its ack pipe."""

    def __init__(self, settings, patient_id: str, model_dir: Path) -> None:
        read_fd, write_fd = os.pipe()
        self.fd = read_fd
        self.buffer = b""
        self.worker: int | None = None  # the current run's trainer pid, once acked
        self.outcome: str | None = None  # "stored N" / "failed X" for the current run
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                DRIVER,
                str(settings.vault_dir),
                PASSPHRASE,
                str(write_fd),
                patient_id,
                str(model_dir),
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.ready = False
        self.wait(lambda d: d.ready, 120, "driver ready")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode("utf-8", "replace")[-3000:]

    def poll(self) -> None:
        """Read the acks that arrived (complete lines only)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        *done, self.buffer = self.buffer.split(b"\n")
        for raw in done:
            line = raw.decode("utf-8")
            if line == "ready":
                self.ready = True
            elif line.startswith("worker "):
                self.worker = int(line.split()[1])
            elif line.startswith(("stored ", "failed ")):
                self.outcome = line

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if predicate(self):
                return
            assert self.proc.poll() is None, f"driver died waiting for {what}: {self.stderr()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.003)

    def train(self) -> None:
        self.worker = self.outcome = None
        self.proc.stdin.write(b"train\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.poll()
        os.close(self.fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _check(store: Store, pid: str, allowed: set[int], manager, tag: str) -> int:
    assert store.damaged_patients() == {}
    for kind in store.list_blobs(pid):
        assert store.read_blob(pid, kind) is not None  # decrypts and authenticates
    active = AdapterRegistry(store).active(pid)
    assert active in allowed, f"active adapter v{active}, expected one of {sorted(allowed)}"
    config, state = AdapterRegistry(store).read(pid, active)
    manager.load(tag, config, state)
    manager.activate(tag)
    import torch

    with torch.no_grad():
        out = manager.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(out.logits).all()
    return active


def _trainer_kill_runs(runs: int, seed: int, model_dir: Path, tmp_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    rng = random.Random(seed)
    settings = load_settings(
        store=StoreSettings(scrypt_log2_n=10),
        model=ModelSettings(spec=str(model_dir), device="cpu"),
        limits=Limits(max_adapters_per_patient=3),
    )
    secret = "Kx" + uuid.uuid4().hex[:10]
    secret_zh = "孙悟空的小狗" + secret[-4:]
    with Store.create(settings.vault_dir, PASSPHRASE, settings=settings) as store:
        pid = store.create_patient("来访者", BasicInfo(demographics=f"{secret} 男，41岁")).id
        for i in range(2):
            store.add_note(
                pid,
                Note(
                    question=f"第{i + 1}次：我总想着{secret_zh}，睡不着。{secret}",
                    analysis=AnalysisDraft(
                        symptom_type=Item(text=f"焦虑 {secret}", draft="焦虑"),
                        reasons=[Item(text=f"担心{secret_zh}", draft="孤独")],
                        advice=[Item(text=f"规律作息 {secret}")],
                    ),
                ),
            )
    needles = _needles([secret, secret_zh])
    roots = [settings.data_dir.parent, tmp_dir, Path(tempfile.gettempdir())]
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    manager = AdapterManager(base, max_resident=2)

    stats = {"runs": 0, "worker_kills": 0, "app_kills": 0, "finished_before_kill": 0}
    stats |= {"new_version_kept_after_app_kill": 0, "stale_run_dirs": 0, "orphan_wait_s": 0.0}
    stats["both_killed"] = 0
    driver: Driver | None = Driver(settings, pid, model_dir)
    started = time.monotonic()
    driver.train()
    driver.wait(lambda d: d.outcome is not None, 300, "the first training")
    assert driver.outcome == "stored 1", (driver.outcome, driver.stderr())
    full_run_s = time.monotonic() - started
    stats["full_run_s"] = round(full_run_s, 2)
    acked = 1  # the adapter the app last reported as stored: the "previous adapter"
    runs_root = runs_dir(settings)
    for run in range(runs):
        target = rng.choice(("worker", "app"))
        delay = rng.uniform(0.0, full_run_s * 1.1)
        if driver is None:
            driver = Driver(settings, pid, model_dir)
        with _reader(settings) as reader:
            newest = max(AdapterRegistry(reader).versions(pid))
        run_dirs_before = set(runs_root.iterdir())
        t0 = time.monotonic()
        driver.train()
        deadline = t0 + delay
        driver.wait(lambda d, t=deadline: d.outcome or time.monotonic() >= t, 300, "the kill time")
        if driver.outcome is None and target == "worker":
            driver.wait(lambda d: d.worker or d.outcome, 120, "the trainer's pid")
            if driver.outcome is None:
                try:
                    os.kill(driver.worker, signal.SIGKILL)
                except ProcessLookupError:  # it ended (and was reaped) just now
                    killed = False
                else:
                    killed = True
                driver.wait(lambda d: d.outcome is not None, 120, "the run's outcome")
                if driver.outcome.startswith("failed "):
                    assert killed and driver.outcome == "failed TrainingError", driver.outcome
                    stats["worker_kills"] += 1
        if driver.outcome is not None:  # the app survived: a finished run or a killed trainer
            if driver.outcome.startswith("stored "):
                stats["finished_before_kill"] += 1
                assert driver.outcome == f"stored {newest + 1}"
                acked = newest + 1
            with _reader(settings) as reader:  # read-only, next to the live app
                _check(reader, pid, {acked}, manager, f"r{run}")
            assert not set(runs_root.iterdir()) - run_dirs_before, "the run folder was left"
        else:  # kill the app mid-run
            driver.kill()
            worker, driver = driver.worker, None
            stats["app_kills"] += 1
            t_orphan = time.monotonic()
            if worker is not None and rng.random() < 0.5:  # both die, as in a power loss
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
                stats["both_killed"] += 1
            while worker is not None and _alive(worker):  # an orphaned trainer ends itself
                assert time.monotonic() - t_orphan < 120, "the orphaned trainer kept running"
                time.sleep(0.05)
            stats["orphan_wait_s"] += time.monotonic() - t_orphan
            # a kill between storing a finished adapter and acknowledging it may leave the
            # new, complete version active; anything else leaves the previous one
            with Store.open(settings.vault_dir, PASSPHRASE, settings=settings) as writer:
                got = _check(writer, pid, {acked, newest + 1}, manager, f"r{run}")
            if got != acked:
                stats["new_version_kept_after_app_kill"] += 1
                acked = got
            stats["stale_run_dirs"] += len(set(runs_root.iterdir()) - run_dirs_before)
        hits = _plaintext_hits(roots, needles)
        assert not hits, f"plaintext after run {run} ({target}): {hits[:5]}"
        stats["runs"] += 1
        progress(stats)
    if driver is not None:
        driver.kill()
    remove_stale_runs(settings, min_age_s=0)  # what the next training run does after 60 s
    assert not list(runs_root.iterdir())
    stats["orphan_wait_s"] = round(stats["orphan_wait_s"], 1)
    stats["final_active"] = acked
    return stats


def test_trainer_or_app_killed_keeps_previous_adapter(tiny_model_dir, private_tmp) -> None:
    runs = kill_runs(2)
    stats = _trainer_kill_runs(runs, seed=3, model_dir=tiny_model_dir, tmp_dir=private_tmp)
    print(json.dumps(stats))
    assert stats["runs"] == runs


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_trainer_or_app_killed_keeps_previous_adapter_200_times(
    tiny_model_dir, private_tmp
) -> None:
    runs = kill_runs(200)
    started = time.monotonic()
    stats = _trainer_kill_runs(runs, seed=200, model_dir=tiny_model_dir, tmp_dir=private_tmp)
    stats["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(stats))
    assert stats["runs"] == runs
    assert stats["worker_kills"] > runs // 4 and stats["app_kills"] > runs // 4, stats


def _reader(settings) -> Store:
    return Store.open(settings.vault_dir, PASSPHRASE, writer=False, settings=settings)
