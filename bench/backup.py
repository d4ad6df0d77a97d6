"""Benchmark encrypted backups at clinic scale and print one JSON object.

Builds a vault of 2,000 patients x 20 notes (bench/store.py's generator; production scrypt
cost for the vault header), starts ``rclone serve sftp`` on 127.0.0.1 and measures, with
``phyassist backup``'s engine:

* first backup (everything), an incremental backup after 10 notes were added to 10
  patients, and a restore of the newest snapshot onto a fresh data directory;
* the same through the real command (``phyassist backup run`` in a subprocess: Python
  start-up, scrypt unlock and all) for the incremental;
* bytes: what our side sent (payload) and what the server's disk grew by (rclone crypt's
  overhead included).

Baseline, same run, same server: a plain ``tar`` of the vault piped to the target
(``rclone rcat``), a GNU tar ``--listed-incremental`` level-1 archive after the same
change, and a restore by downloading and extracting the full tar.

Usage: ``python bench/backup.py [--patients 2000] [--notes 20] [--changed 10]``.
Goals: incremental <= 2 s and <= 1 % of the vault's size sent; restore <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # first: bench/engine.py must not shadow the engine package


def _store_bench():
    """bench/store.py's generator (loaded by path: bench/engine.py would shadow engine/)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_store", ROOT / "bench" / "store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_gen = _store_bench()
make_note, make_patient = _gen.make_note, _gen.make_patient

from engine.backup import service  # noqa: E402
from engine.backup.restore import restore  # noqa: E402
from engine.backup.targets import Target, rclone_for  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.vault.store import Store  # noqa: E402

PASSPHRASE = "benchmark passphrase"
USER, PASSWORD = "bench", "bench-sftp-password"


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path) -> tuple[subprocess.Popen, int]:
    import socket

    from engine.backup.rclone import rclone_binary

    port = _free_port()
    proc = subprocess.Popen(
        [
            rclone_binary(),
            "serve",
            "sftp",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--user",
            USER,
            "--pass",
            PASSWORD,
        ],
        stderr=subprocess.DEVNULL,
        env={"RCLONE_CONFIG": "", "PATH": os.environ.get("PATH", ""), "HOME": str(root.parent)},
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("rclone serve sftp did not start")


def _tar_to(rc, vault_dir: Path, name: str, snar: Path | None = None) -> tuple[float, int]:
    """tar the vault (optionally --listed-incremental) into ``rclone rcat``; (seconds, bytes)."""
    t0 = time.perf_counter()
    args = ["tar", "-C", str(vault_dir.parent), "-cf", "-"]
    if snar is not None:
        args += [f"--listed-incremental={snar}"]
    args += ["--exclude=vault.lock", vault_dir.name]
    tar = subprocess.Popen(args, stdout=subprocess.PIPE)
    counted = 0
    rcat = subprocess.Popen(
        [rc_binary(), "rcat", rc.base_path(f"tar/{name}")], stdin=subprocess.PIPE, env=rc.env()
    )
    assert tar.stdout is not None and rcat.stdin is not None
    while chunk := tar.stdout.read(1 << 20):
        counted += len(chunk)
        rcat.stdin.write(chunk)
    rcat.stdin.close()
    if tar.wait() != 0 or rcat.wait() != 0:
        raise RuntimeError("tar baseline failed")
    return time.perf_counter() - t0, counted


def rc_binary() -> str:
    from engine.backup.rclone import rclone_binary

    return rclone_binary()


def run(patients: int, notes: int, changed: int) -> dict:
    rng = random.Random(20261205)
    work = Path(tempfile.mkdtemp(prefix="phyassist-bench-backup-"))
    os.environ["PHYASSIST_HOME"] = str(work / "home")
    settings = Settings()  # production scrypt cost (n = 2**15)
    out: dict = {"patients": patients, "notes_per_patient": notes, "changed_notes": changed}
    server = None
    try:
        t0 = time.perf_counter()
        store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
        batch = []
        for _ in range(patients):
            batch.append(make_patient(rng, notes))
            if len(batch) == 100:
                store.import_patients(batch)
                batch = []
        if batch:
            store.import_patients(batch)
        ids = [s.id for s in store.list_patients()]
        out["build_vault_s"] = round(time.perf_counter() - t0, 1)
        vault_bytes = _du(settings.vault_dir)
        out["vault_bytes"] = vault_bytes
        out["vault_files"] = sum(1 for f in settings.vault_dir.rglob("*") if f.is_file())

        remote = work / "remote"
        remote.mkdir()
        server, port = _serve(remote)
        target_url = f"sftp://{USER}@127.0.0.1:{port}/backups"
        service.add_target(store, settings.data_dir, "nas", target_url, PASSWORD)

        def backup() -> tuple[float, int, int]:
            before = _du(remote)
            t = time.perf_counter()
            plan = service.plan_run(store, settings.data_dir)
            (result,) = service.execute(plan)
            if result.error:
                raise RuntimeError(result.error)
            return time.perf_counter() - t, result.bytes_sent, _du(remote) - before

        secs, sent, grew = backup()
        out["first_backup"] = {
            "seconds": round(secs, 2),
            "bytes_sent": sent,
            "server_bytes_added": grew,
        }
        rc = rclone_for(Target("nas", target_url, PASSWORD), None)
        snar = work / "tar.snar"
        tsecs, tbytes = _tar_to(rc, settings.vault_dir, "full.tar", snar)
        out["tar_full"] = {"seconds": round(tsecs, 2), "bytes_sent": tbytes}

        for pid in rng.sample(ids, changed):
            store.add_note(pid, make_note(rng))
        store.flush()
        secs, sent, grew = backup()
        out["incremental"] = {
            "seconds": round(secs, 3),
            "bytes_sent": sent,
            "server_bytes_added": grew,
            "percent_of_vault": round(100 * grew / vault_bytes, 3),
        }
        isecs, ibytes = _tar_to(rc, settings.vault_dir, "level1.tar", snar)
        out["tar_incremental_listed"] = {
            "seconds": round(isecs, 2),
            "bytes_sent": ibytes,
            "percent_of_vault": round(100 * ibytes / vault_bytes, 3),
        }
        isecs, ibytes = _tar_to(rc, settings.vault_dir, "full2.tar")
        out["tar_full_again"] = {"seconds": round(isecs, 2), "bytes_sent": ibytes}

        # The real command, end to end (Python start-up, scrypt unlock, plan, send).
        for pid in rng.sample(ids, changed):
            store.add_note(pid, make_note(rng))
        store.close()
        env = {**os.environ, "PHYASSIST_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "phyassist_tui", "backup", "run"],
            env=env,
            capture_output=True,
            text=True,
        )
        out["incremental_cli"] = {
            "seconds": round(time.perf_counter() - t, 2),
            "rc": done.returncode,
            "output": done.stdout.strip(),
        }

        # Restore onto a fresh data directory (the engine path the command uses).
        fresh = work / "fresh"
        t = time.perf_counter()
        result = restore(
            fresh,
            rc,
            PASSPHRASE,
            target=Target("nas", target_url, PASSWORD),
            settings=settings,
        )
        out["restore"] = {
            "seconds": round(time.perf_counter() - t, 2),
            "files": result.files,
            "patients": result.patients,
            "bytes_received": _du(fresh / "vault"),
        }
        untar = work / "untar"
        untar.mkdir()
        t = time.perf_counter()
        cat = subprocess.Popen(
            [rc_binary(), "cat", rc.base_path("tar/full.tar")], stdout=subprocess.PIPE, env=rc.env()
        )
        subprocess.run(["tar", "-C", str(untar), "-xf", "-"], stdin=cat.stdout, check=True)
        cat.wait()
        out["tar_restore"] = {"seconds": round(time.perf_counter() - t, 2)}
        out["goals"] = {
            "incremental_le_2s": out["incremental"]["seconds"] <= 2.0,
            "incremental_le_1pct": out["incremental"]["percent_of_vault"] <= 1.0,
            "restore_le_60s": out["restore"]["seconds"] <= 60.0,
        }
        out["cpus"] = os.cpu_count()
        out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        return out
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--notes", type=int, default=20)
    parser.add_argument("--changed", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run(args.patients, args.notes, args.changed), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
