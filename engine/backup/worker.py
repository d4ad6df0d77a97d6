"""``python -m engine.backup.worker``: send a prepared backup (the plan arrives on stdin).

Started detached by the app on lock and quit, so a backup goes on after the app is gone.
Results land in ``<data dir>/backup/state.json``, which the status line reads.
"""

from __future__ import annotations

import sys


def main() -> int:
    from engine.trust.hardening import harden_process

    harden_process()  # holds the backup key: not dumpable, no core dumps, umask 077
    from engine.backup.service import RunPlan, execute

    plan = RunPlan.from_json(sys.stdin.read())
    results = execute(plan)
    return 0 if all(not r.error for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
