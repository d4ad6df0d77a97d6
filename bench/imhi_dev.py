"""A development split for IMHI drift: training rows outside the rehearsal pool and the tests.

Choosing how much domain rehearsal a patient run needs (engine.training.rehearsal) must not
look at IMHI's test sets, so the choice is made on rows of IMHI's *training* files that are
neither in the shipped rehearsal pool nor test posts. The domain adapter learned from them,
so domain-alone scores are high; what the split measures is how far a patient adapter moves
the domain model's answers (drift), not generalisation. Writes ``OUT/test/<TASK>.csv`` in
IMHI's layout for ``phyassist eval imhi --data OUT``:

    python bench/imhi_dev.py --out /tmp/imhi-dev
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataprep.imhi import read_train
from engine.training.rehearsal import read_pool

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imhi"
POOL = ROOT / "adapters" / "smollm2-135m-drafts"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", default="Irf,DR,dreaddit")
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    pool = {row["prompt"][-1]["content"].strip() for row in read_pool(POOL)}
    test: set[str] = set()
    for path in (SHARED / "test").glob("*.csv"):
        with path.open(encoding="utf-8", newline="") as fh:
            test |= {row["query"].strip() for row in csv.DictReader(fh)}
    rows = read_train(SHARED / "train")
    out = Path(args.out) / "test"
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        kept = [r for r in rows if r.task == task and r.prompt not in pool | test]
        random.Random(7).shuffle(kept)
        with (out / f"{task}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query", "gpt-3.5-turbo"])
            writer.writerows([r.prompt, r.completion] for r in kept[: args.rows])
        print(f"{task}: {min(len(kept), args.rows)} of {len(kept)} rows -> {out / task}.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
