"""The app's side of training, driven by test_trainer_kill.py until it is killed.

``python -m tests.engine.training.trainer_kill_driver VAULT_DIR PASSPHRASE ACK_FD PATIENT_ID
MODEL_DIR``

Opens the vault as the app does and, for every ``train`` line on stdin, runs one
``engine.training.runner.TrainingRun`` (the real worker subprocess, on a tiny model) for the
patient. Acks on the pipe ``ACK_FD``, each written after the fact it reports:

    ready
    worker <pid>            the trainer subprocess exists (the parent may kill it)
    event <phase> <step>    a progress event arrived
    stored <version>        the adapter was stored and made active (events() returned)
    failed <ExceptionName>  the run failed cleanly (e.g. the worker was killed)
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from engine.errors import PhyAssistError
from engine.settings import Limits, ModelSettings, StoreSettings, load_settings
from engine.training.runner import TrainingRun
from engine.vault.store import Store

QUICK = {"max_steps": 2, "preference_method": "none"}


def main() -> None:
    vault_dir, passphrase, fd, patient_id, model_dir = sys.argv[1:6]
    ack_fd = int(fd)

    def ack(line: str) -> None:
        os.write(ack_fd, (line + "\n").encode("utf-8"))

    settings = load_settings(
        store=StoreSettings(scrypt_log2_n=10),
        model=ModelSettings(spec=model_dir, device="cpu"),
        limits=Limits(max_adapters_per_patient=3),
    )
    store = Store.open(Path(vault_dir), passphrase, settings=settings)
    ack("ready")
    for line in sys.stdin:
        if line.strip() != "train":
            continue
        run = TrainingRun(store, patient_id, settings, overrides=dict(QUICK))
        done = threading.Event()

        def report_pid(run: TrainingRun = run, done: threading.Event = done) -> None:
            while not done.is_set():
                if run.pid is not None:
                    ack(f"worker {run.pid}")
                    return
                done.wait(0.005)

        watcher = threading.Thread(target=report_pid, daemon=True)
        watcher.start()
        try:
            for event in run.events():
                ack(f"event {event.phase} {event.step}")
        except PhyAssistError as exc:
            done.set()
            watcher.join()
            ack(f"failed {type(exc).__name__}")
            continue
        done.set()
        watcher.join()
        assert run.result is not None
        ack(f"stored {run.result.version}")


if __name__ == "__main__":
    main()
