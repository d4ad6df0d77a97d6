"""PhyAssist benchmarks: ``python -m bench.NAME`` from the repository root (or ``./dev bench
NAME``). Each prints JSON and compares against a baseline measured in the same run."""

from pathlib import Path

#: The checkout the benchmarks run from (they are not installed: its data/ and ../shared).
REPO = Path(__file__).resolve().parent.parent
