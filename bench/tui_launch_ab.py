"""Launch time of two checkouts of PhyAssist, interleaved, and print one JSON object.

``bench.tui`` times one tree's launch against a bare Textual app. Whether a change made the
launch slower needs the old tree on the same box at the same moment: on a shared 2-core
machine the load swings the wall time by 2x within minutes. This runs each tree's OWN
launch child (``bench/tui.py --child launch``: spawn, unlock, patient list filled and
painted) on a vault made by that tree's own code, with the same scrypt cost for both, the
trees taking turns run by run, a bare Textual app (``--child baseline-launch``) in the same
turns. The time is taken at the later of the child's READY and the first frame written with the
list on it (``bench.tui``'s READY, one refresh after the list is filled, often comes before that
frame: the first refresh after the switch to the workspace is mostly an empty update). Besides
the wall time it reports each child's process CPU time at that point (all threads), which the
neighbours' load disturbs far less. ``bench.tui`` itself is left as it was, so that its figures
stay comparable with the earlier ones.

Bytecode: with ``PYTHONDONTWRITEBYTECODE=1`` (set on the project's dev box) every launch
compiles every module of the tree from source, which an installed app does once.
``--bytecode cached`` gives each tree its own ``PYTHONPYCACHEPREFIX``, warmed by one
uncounted launch; ``none`` compiles every time; ``both`` (default) measures both.

Usage: ``python -m bench.tui_launch_ab --before /path/to/old/checkout [--after .]
[--rounds 10] [--kdf-log2-n 15] [--bytecode both|cached|none]``
(e.g. ``git worktree add /tmp/base fb9232e``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import REPO
from bench.tui import read_status_line

LAUNCH_TIMEOUT_S = 60.0

# Runs TREE's bench/tui.py as its child. Its READY (list filled, then one refresh) can come
# before the frame that shows the list: the first refresh after the switch to the workspace
# is often an empty update. So the refresh the child waits for before READY also waits for a
# frame with a patient's name to be written to the terminal, and READY carries the process
# CPU time. Same wrapper, same rule, for both trees.
CHILD = """
import asyncio, os, re, runpy, sys, time
tree = sys.argv.pop(1)
sys.path.insert(0, tree)
import textual.app, textual.message_pump
painted = []
display = textual.app.App._display
def painted_display(self, screen, renderable):
    result = display(self, screen, renderable)
    if not painted and renderable is not None and type(screen).__name__ != "UnlockScreen":
        text = re.sub(r"\\x1b\\[[0-9;?]*[A-Za-z]", "", renderable.render_segments(self.console))
        if "Patient 0" in text:
            painted.append(True)
    return result
textual.app.App._display = painted_display
refreshed = textual.message_pump.MessagePump.wait_for_refresh
async def refreshed_and_painted(self):  # what the child awaits right before READY
    result = await refreshed(self)
    while not painted:
        await asyncio.sleep(0.002)
    return result
textual.message_pump.MessagePump.wait_for_refresh = refreshed_and_painted
write = os.write
def timed_write(fd, data):
    if isinstance(data, bytes) and data.startswith(b"READY"):  # not the app's own writes
        data = data.rstrip(b"\\n") + f" cpu={time.process_time():.4f}\\n".encode()
    return write(fd, data)
os.write = timed_write
sys.argv = [os.path.join(tree, "bench", "tui.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Makes the vault with TREE's own code and prints the child environment its bench uses.
PREPARE = """
import json, runpy, sys
from pathlib import Path
tree, home = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, tree)
bench = runpy.run_path(tree + "/bench/tui.py")
names = bench["make_vault"](home, 50)
print(json.dumps({"env": bench["child_env"](home), "names": names}))
"""


def prepare(tree: Path, home: Path, kdf: int) -> tuple[dict[str, str], list[str]]:
    env = dict(os.environ, PYTHONPATH=str(tree), PHYASSIST_HOME=str(home))
    env["PHYASSIST_STORE__SCRYPT_LOG2_N"] = str(kdf)
    out = subprocess.run(
        [sys.executable, "-c", PREPARE, str(tree), str(home)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    made = json.loads(out.stdout.strip().splitlines()[-1])
    child = made["env"]
    child.update(PYTHONPATH=str(tree), PHYASSIST_STORE__SCRYPT_LOG2_N=str(kdf))
    return child, made["names"]


def launch(tree: Path, env: dict[str, str], child: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds from spawning ``tree``'s bench child to its READY line."""
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tree), *child, "--status-fd", str(write_fd)],
        env=env,
        cwd=tree,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    line = read_status_line(proc, read_fd, str(tree), LAUNCH_TIMEOUT_S)
    wall = time.perf_counter() - start
    os.close(read_fd)
    proc.wait(timeout=120)
    return wall, float(line.rsplit("cpu=", 1)[1])


def summary(walls: list[float], cpus: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(walls), 3),
        "range_s": [round(min(walls), 3), round(max(walls), 3)],
        "cpu_median_s": round(statistics.median(cpus), 3),
        "cpu_range_s": [round(min(cpus), 3), round(max(cpus), 3)],
        "runs_s": [round(x, 3) for x in walls],
        "cpu_s": [round(x, 3) for x in cpus],
    }


def measure(trees: dict[str, Path], rounds: int, kdf: int, bytecode: str, work: Path) -> dict:
    envs, names = {}, []
    for label, tree in trees.items():
        envs[label], names = prepare(tree, work / f"home-{label}-{bytecode}", kdf)
        if bytecode == "cached":
            envs[label].pop("PYTHONDONTWRITEBYTECODE", None)
            envs[label]["PYTHONPYCACHEPREFIX"] = str(work / f"pyc-{label}")
        else:
            envs[label]["PYTHONDONTWRITEBYTECODE"] = "1"
    app = ["--child", "launch", "--engine", "real"]
    bare = ["--child", "baseline-launch", "--names", json.dumps(names)]
    runs = [(label, app) for label in trees] + [("bare_textual", bare)]
    tree_of = {**trees, "bare_textual": trees["after"]}  # the same bare app in both trees
    env_of = {**envs, "bare_textual": envs["after"]}
    if bytecode == "cached":
        for label, child in runs:  # uncounted: writes the bytecode
            launch(tree_of[label], env_of[label], child)
    walls: dict[str, list[float]] = {label: [] for label, _ in runs}
    cpus: dict[str, list[float]] = {label: [] for label, _ in runs}
    loads = []
    for turn in range(rounds):
        shift = turn % len(runs)  # who goes first changes every round
        for label, child in runs[shift:] + runs[:shift]:
            wall, cpu = launch(tree_of[label], env_of[label], child)
            walls[label].append(wall)
            cpus[label].append(cpu)
        loads.append(round(os.getloadavg()[0], 2))
    result = {label: summary(walls[label], cpus[label]) for label in walls}
    before, after = result["before"], result["after"]
    pairs = zip(walls["after"], walls["before"], strict=True)  # same round: same load
    result["after_over_before"] = {
        "wall": round(after["median_s"] / before["median_s"], 3),
        "cpu": round(after["cpu_median_s"] / before["cpu_median_s"], 3),
        "wall_paired_median": round(statistics.median(a / b for a, b in pairs), 3),
    }
    result["loadavg_1m_per_round"] = loads
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the old checkout")
    parser.add_argument("--after", type=Path, default=REPO, help="the new checkout")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--kdf-log2-n", type=int, default=15, help="scrypt cost for both")
    parser.add_argument("--bytecode", choices=("both", "cached", "none"), default="both")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    commits = {
        label: subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for label, tree in trees.items()
    }
    work = Path(tempfile.mkdtemp(prefix="phyassist-bench-ab-"))
    try:
        result = {
            "bench": "tui_launch_ab",
            "commits": commits,
            "kdf_scrypt_log2_n": args.kdf_log2_n,
            "rounds": args.rounds,
            "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        }
        modes = ("cached", "none") if args.bytecode == "both" else (args.bytecode,)
        for mode in modes:
            result[f"bytecode_{mode}"] = measure(trees, args.rounds, args.kdf_log2_n, mode, work)
        result["machine"]["loadavg_end"] = os.getloadavg()
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
