"""Time one passphrase guess against the vault's key derivation (what an attacker pays).

Prints JSON: per scrypt cost (log2 n, r=8, p=1) the best and median seconds of ``repeat``
derivations through ``engine.vault.crypto.derive_key`` (the production path), and the
memory each guess needs. The default cost is ``StoreSettings().scrypt_log2_n``.

    python bench/kdf.py [--repeat 5] [--costs 15 16 17]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from engine.settings import StoreSettings
from engine.vault import crypto


def time_cost(log2_n: int, repeat: int) -> dict:
    params = crypto.KdfParams.fresh(log2_n, 8, 1)
    runs = []
    for i in range(repeat):
        start = time.perf_counter()
        crypto.derive_key(f"guess number {i}", params)
        runs.append(time.perf_counter() - start)
    return {
        "log2_n": log2_n,
        "memory_mib": 128 * 8 * 2**log2_n / 2**20,
        "best_s": round(min(runs), 4),
        "median_s": round(statistics.median(runs), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--costs", type=int, nargs="*", default=[15, 16, 17])
    args = parser.parse_args()
    default = StoreSettings().scrypt_log2_n
    rows = [time_cost(c, args.repeat) for c in args.costs]
    print(
        json.dumps(
            {
                "default_log2_n": default,
                "load_avg_1min": os.getloadavg()[0],
                "cpus": os.cpu_count(),
                "costs": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
