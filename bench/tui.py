"""Benchmark the TUI's responsiveness and print one JSON object.

Two figures, each next to a baseline measured in the same run:

* **launch**: wall time from spawning the process to an interactive patient list (vault of
  ``--patients`` patients at the production scrypt cost, passphrase submitted as soon as
  the unlock field takes focus, the list filled and painted), while the model loads in the
  background (``--engine real``: the embedded model, torch imported in a worker thread).
  The child starts the app as ``phyassist`` does (collector paused, see
  ``phyassist_tui.startup``). Baseline: a bare Textual app with the same widgets (header,
  search input, list of the same names, tabs with a Markdown view, footer) filled from
  memory. Target <= 1.0 s.
* **key_latency**: key press to repaint while a generation streams. The app runs in a real
  pseudo-terminal; the bench types a character into the observed-state input and times
  until the terminal output carries it (then erases it and waits before the next sample).
  Baseline: a bare Textual app with an Input and a streaming Static fed by a thread at the
  same chunk rate. With ``--engine real`` the stream comes from the embedded model (CPU
  generation competing for the GIL); when the model stops on its own the next draft starts
  at once (``--max-new-tokens`` small makes that frequent). ``fake`` streams canned text at
  ``--rate`` chunks/s. Target p95 <= 50 ms. ``missed`` counts keys that never reached the
  screen within 2 s: a lost key, a bug (it was 13-14 of 100 until a finished draft stopped
  taking the focus from the field being typed in), so it must stay 0. ``--during prefill``
  takes the same samples while the model reads the opened patient's record ahead (real
  engine; the reading is repeated with the cache cleared so that it lasts).

Usage: ``python -m bench.tui [--engine real|fake] [--patients 50] [--runs 3]
[--samples 100] [--rate 20] [--max-new-tokens 2048] [--only launch|latency]
[--during stream|prefill]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import REPO

PASSPHRASE = "benchmark passphrase"
QUESTION = (
    "Since I failed the entrance exam last year I cannot sleep, I worry all day about "
    "disappointing my parents and I cannot concentrate on my books any more."
)
STREAM_TEXT = " ".join(
    ["The client describes persistent worry about exams and family expectations."] * 200
)
LAUNCH_TIMEOUT_S = 60.0  # a launch that never shows its list is a failure, not a hang
MARKERS = "§¤¶¬µ¦±÷×ßðøþæ"  # characters no stream contains; one per sample


# -- child processes ------------------------------------------------------------------------------
def _settings(engine: str):
    from engine.settings import load_settings

    settings = load_settings()
    if engine == "real":
        settings.generation.max_new_tokens = int(os.environ.get("BENCH_MAX_NEW_TOKENS", "2048"))
    return settings


class FixedRateEngine:
    """Streams canned text at a fixed chunk rate; the bench's stand-in for a model."""

    model_label = "fixed-rate stream"
    context_report = ""
    last_stats = None

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.loaded = False

    def load(self, progress=None) -> None:
        self.loaded = True

    def use_patient(self, patient, store=None) -> str:
        return self.model_label

    def _stream(self, cancel):
        for word in STREAM_TEXT.split(" "):
            if cancel.is_set():
                return
            time.sleep(1.0 / self.rate)
            yield word + " "

    def stream_analysis(self, patient, question, *, cancel, guidance=None, observed=""):
        return self._stream(cancel)

    def parse_analysis(self, text):
        from engine.records import AnalysisDraft

        return AnalysisDraft(raw_output=text)


def child_launch(engine: str, status_fd: int) -> None:
    """Run the real app headless (started as ``phyassist`` starts it); report when the
    patient list is filled and painted."""
    import asyncio

    from phyassist_tui.startup import pause_gc

    pause_gc()
    from phyassist_tui.app import PhyAssistApp

    settings = _settings(engine)
    assistant = FixedRateEngine(20) if engine == "fake" else None
    app = PhyAssistApp(settings, assistant=assistant)

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            while not (app.focused is not None and app.focused.id == "passphrase"):
                await pilot.pause(0.005)
            app.focused.value = PASSPHRASE
            await app.focused.action_submit()
            while True:
                screen = app.screen
                listing = screen.query("#patient-list")
                if listing and listing.first().option_count > 0:
                    break
                await pilot.pause(0.005)
            await listing.first().wait_for_refresh()  # laid out and painted, not just mounted
            os.write(status_fd, f"READY {app.model_state}\n".encode())
            app.exit()

    asyncio.run(run())


def child_baseline_launch(names: list[str], status_fd: int) -> None:
    import asyncio

    from textual.app import App, ComposeResult
    from textual.containers import Horizontal, Vertical
    from textual.widgets import (
        Footer,
        Header,
        Input,
        Markdown,
        OptionList,
        TabbedContent,
        TabPane,
    )

    class Bare(App):
        CSS = "#patients { width: 28; } #patient-list { height: 1fr; }"  # as the app's pane

        def compose(self) -> ComposeResult:
            yield Header()
            with Horizontal():
                with Vertical(id="patients"):
                    yield Input(placeholder="Search")
                    yield OptionList(id="patient-list")
                with TabbedContent(), TabPane("Notes"):
                    yield Markdown("# Notes")
            yield Footer()

        def on_mount(self) -> None:
            self.query_one(OptionList).add_options(names)

    app = Bare()

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            while app.query_one("#patient-list", OptionList).option_count == 0:
                await pilot.pause(0.005)
            await app.query_one("#patient-list").wait_for_refresh()  # as for the app
            os.write(status_fd, b"READY baseline\n")
            app.exit()

    asyncio.run(run())


def child_latency(engine: str, rate: float, status_fd: int, during: str = "stream") -> None:
    """The real app in this terminal: unlock, open a patient, start streaming, then idle.

    ``during="prefill"``: no draft; the model reads the patient's record ahead (what opening
    a patient starts), again and again with the cache cleared, while the keys are typed."""
    from phyassist_tui.startup import pause_gc

    pause_gc()
    from phyassist_tui.app import PhyAssistApp
    from phyassist_tui.screens.workspace import WorkspaceScreen

    settings = _settings(engine)
    assistant = FixedRateEngine(rate) if engine == "fake" else None

    class BenchApp(PhyAssistApp):
        def on_mount(self) -> None:
            super().on_mount()
            self.set_interval(0.02, self._drive)
            self._stage = "unlock"

        def prefill_record(self, patient, cancel) -> int:
            if during != "prefill":
                return super().prefill_record(patient, cancel)
            os.write(status_fd, b"STREAMING\n")  # the record is being read from now on
            read = 0
            while not cancel.is_set():
                self.assistant.prefix_cache.clear()
                read = super().prefill_record(patient, cancel)
                if not read:
                    break  # nothing to read (or it failed): do not spin
            return read

        async def _drive(self) -> None:
            screen = self.screen
            if (
                self._stage == "unlock"
                and self.focused is not None
                and self.focused.id == "passphrase"
            ):
                self.focused.value = PASSPHRASE
                self._stage = "unlocking"
                await self.focused.action_submit()
            elif self._stage == "unlocking" and isinstance(screen, WorkspaceScreen):
                found = screen.query("#patient-list")
                listing = found.first() if found else None
                if listing is not None and listing.option_count:
                    listing.highlighted = 0
                    listing.action_select()
                    self._stage = "opening"
            elif (
                self._stage == "opening"
                and isinstance(screen, WorkspaceScreen)
                and screen.patient is not None
                and self.model_state == "ready"
                and during == "prefill"
            ):
                screen.action_show_tab("analysis")
                screen.query_one("#observed").focus()
                self._stage = "prefill"
            elif (
                self._stage == "opening"
                and isinstance(screen, WorkspaceScreen)
                and screen.patient is not None
                and self.model_state == "ready"
            ):
                screen.query_one("#question").load_text(QUESTION)
                screen.action_generate()
                screen.query_one("#observed").focus()
                self._stage = "starting"
            elif self._stage == "starting" and screen.analysis.stream.text.count(" ") >= 3:
                os.write(status_fd, b"STREAMING\n")
                self._stage = "streaming"
            elif self._stage == "streaming" and screen.generating is None:
                # the model stopped on its own: start the next draft at once, so the
                # samples are taken while a generation streams
                screen.action_generate()
                screen.query_one("#observed").focus()

    BenchApp(settings, assistant=assistant).run()


def child_baseline_latency(rate: float, status_fd: int) -> None:
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll
    from textual.widgets import Footer, Header, Input, Static

    class Bare(App):
        CSS = "#patients { width: 28; } #patient-list { height: 1fr; }"  # as the app's pane

        def compose(self) -> ComposeResult:
            yield Header()
            yield Input(id="observed")
            with VerticalScroll(id="stream"):
                yield Static("", id="text")
            yield Footer()

        def on_mount(self) -> None:
            self.text = ""
            self.query_one("#stream").anchor()
            self.query_one(Input).focus()
            threading.Thread(target=self._feed, daemon=True).start()

        def _feed(self) -> None:
            for n, word in enumerate(STREAM_TEXT.split(" "), 1):
                time.sleep(1.0 / rate)
                self.call_from_thread(self._append, word + " ")
                if n == 3:
                    os.write(status_fd, b"STREAMING\n")
            os.write(status_fd, b"END\n")

        def _append(self, chunk: str) -> None:
            self.text += chunk
            self.query_one("#text", Static).update(self.text)

    Bare().run()


# -- parent: measurement ----------------------------------------------------------------
def make_vault(home: Path, patients: int, long_record: bool = False) -> list[str]:
    """``patients`` with one short note each; ``long_record``: the newest one (listed first,
    the patient the latency bench opens) has 20 notes, a record of ~2,000 tokens."""
    os.environ["PHYASSIST_HOME"] = str(home)
    from engine.records import AnalysisDraft, BasicInfo, Item, Note
    from engine.settings import load_settings
    from engine.vault.store import Store

    settings = load_settings()  # production scrypt cost
    store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
    names = []
    for i in range(patients):
        name = f"Patient {i:03d} 王{i}"
        patient = store.create_patient(name, BasicInfo(demographics=f"{20 + i % 40}, student"))
        long = long_record and i == patients - 1  # the newest is listed first
        for session in range(20 if long else 1):
            store.add_note(
                patient.id,
                Note(
                    question=f"Session {session}: " + QUESTION
                    if long
                    else "Exam worry and insomnia.",
                    analysis=AnalysisDraft(
                        symptom_type=Item(text="anxiety"), reasons=[Item(text="pressure")]
                    ),
                ),
            )
        names.append(name)
    store.close()
    return names


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PHYASSIST_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PHYASSIST_IDLE_LOCK_MINUTES="0",
        TERM="xterm-256color",
    )
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    from platformdirs import user_cache_path

    shared = user_cache_path("phyassist")
    if (shared / "models").is_dir():  # dequantized weights, not patient data
        env["PHYASSIST_CACHE_DIR"] = str(shared)
    return env


def time_launch(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.tui", *args, "--status-fd", str(write_fd)],
        env=env,
        cwd=REPO,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    line = read_status_line(proc, read_fd, f"{args[:2]}", LAUNCH_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    os.close(read_fd)
    proc.wait(timeout=120)
    return elapsed, line.split(" ", 1)[1].strip()


def read_status_line(
    proc: subprocess.Popen, read_fd: int, what: str, timeout_s: float = LAUNCH_TIMEOUT_S
) -> str:
    """The one line a launched child writes to its status pipe once the list is painted."""
    line = b""
    while not line.endswith(b"\n"):
        if not select.select([read_fd], [], [], timeout_s)[0]:
            proc.kill()
            raise RuntimeError(f"no patient list after {timeout_s:.0f} s: {what}")
        chunk = os.read(read_fd, 256)
        if not chunk:
            raise RuntimeError(f"{what}: child failed: {proc.stderr.read().decode()[-2000:]}")
        line += chunk
    return line.decode()


def measure_latency(args: list[str], env: dict[str, str], samples: int, timeout: float) -> dict:
    """Spawn the child on a pty, wait for streaming, then time key -> repaint."""
    status_r, status_w = os.pipe()
    os.set_inheritable(status_w, True)  # the child writes its progress there after exec
    pid, master = pty.fork()
    if pid == 0:  # child
        os.close(status_r)
        os.chdir(REPO)
        command = [sys.executable, "-m", "bench.tui", *args, "--status-fd", str(status_w)]
        os.execve(sys.executable, command, env)
    os.close(status_w)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    buffer = bytearray()
    status = b""

    def pump(wait: float) -> None:
        nonlocal status
        ready, _, _ = select.select([master, status_r], [], [], wait)
        if master in ready:
            with contextlib.suppress(OSError):
                buffer.extend(os.read(master, 65536))
        if status_r in ready:
            status += os.read(status_r, 256)

    deadline = time.monotonic() + timeout
    while b"STREAMING" not in status:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            raise RuntimeError(
                "the stream never started; output tail: " + buffer[-500:].decode(errors="replace")
            )
        pump(0.05)
        del buffer[:-4096]
    latencies: list[float] = []
    dropped = 0
    for i in range(samples):
        if b"END" in status:
            break
        marker = MARKERS[i % len(MARKERS)]
        needle = marker.encode()
        buffer.clear()
        sent = time.perf_counter()
        os.write(master, needle)
        seen = None
        while time.perf_counter() - sent < 2.0:
            pump(0.002)
            if needle in buffer:
                seen = time.perf_counter()
                break
        if seen is None:
            dropped += 1
        elif b"END" not in status:
            latencies.append((seen - sent) * 1000)
        os.write(master, b"\x7f")  # erase it again
        settle = time.perf_counter()
        while time.perf_counter() - settle < 0.15:
            pump(0.01)
    os.write(master, b"\x11")  # ctrl+q
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(master)
    os.close(status_r)
    if not latencies:
        raise RuntimeError(
            f"no latency samples ({dropped} keys never repainted; status {status!r}); "
            f"output tail: {buffer[-800:].decode(errors='replace')}"
        )
    ordered = sorted(latencies)
    return {
        "samples": len(latencies),
        "missed": dropped,
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("real", "fake"), default="real")
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="fake/baseline chunks per s")
    parser.add_argument(
        "--only", choices=("launch", "latency"), help="measure one figure (and its baseline)"
    )
    parser.add_argument(
        "--during",
        choices=("stream", "prefill"),
        default="stream",
        help="latency: while a draft streams, or while the opened patient's record is read",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=2048,
        help="real engine: tokens per draft (small values restart the draft often)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "launch":
        return child_launch(args.engine, args.status_fd)
    if args.child == "baseline-launch":
        return child_baseline_launch(json.loads(args.names), args.status_fd)
    if args.child == "latency":
        return child_latency(args.engine, args.rate, args.status_fd, args.during)
    if args.child == "baseline-latency":
        return child_baseline_latency(args.rate, args.status_fd)

    home = Path(tempfile.mkdtemp(prefix="phyassist-bench-tui-"))
    try:
        names = make_vault(home, args.patients, long_record=args.during == "prefill")
        env = child_env(home)
        env["BENCH_MAX_NEW_TOKENS"] = str(args.max_new_tokens)
        result = {
            "bench": "tui",
            "engine": args.engine,
            "machine": {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        }
        if args.only != "latency":
            result["launch_to_patient_list"] = measure_launch(args, names, env)
        if args.only != "launch":
            figure = "streaming" if args.during == "stream" else "reading_the_record"
            result[f"key_to_repaint_while_{figure}"] = measure_key_latency(args, env)
        result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure_launch(args: argparse.Namespace, names: list[str], env: dict[str, str]) -> dict:
    launch, baseline, states = [], [], []
    for _ in range(args.runs):  # alternate so machine load hits both alike
        elapsed, state = time_launch(["--child", "launch", "--engine", args.engine], env)
        launch.append(elapsed)
        states.append(state)
        elapsed, _ = time_launch(["--child", "baseline-launch", "--names", json.dumps(names)], env)
        baseline.append(elapsed)
    launch_median, baseline_median = statistics.median(launch), statistics.median(baseline)
    return {
        "patients": args.patients,
        "runs_s": [round(x, 3) for x in launch],
        "median_s": round(launch_median, 3),
        "model_state_when_ready": states,
        "baseline_bare_textual_runs_s": [round(x, 3) for x in baseline],
        "baseline_median_s": round(baseline_median, 3),
        "ratio": round(launch_median / baseline_median, 2),
        "target_s": 1.0,
        "meets_target": launch_median <= 1.0,
    }


def measure_key_latency(args: argparse.Namespace, env: dict[str, str]) -> dict:
    latency = measure_latency(
        [
            *("--child", "latency", "--engine", args.engine, "--rate", str(args.rate)),
            *("--during", args.during),
        ],
        env,
        args.samples,
        600,
    )
    base_latency = measure_latency(
        ["--child", "baseline-latency", "--rate", str(args.rate)], env, args.samples, 60
    )
    return {
        "phyassist": latency,
        "baseline_bare_textual": base_latency,
        "ratio_p95": round(latency["p95_ms"] / base_latency["p95_ms"], 2),
        "target_p95_ms": 50.0,
        "meets_target": latency["p95_ms"] <= 50.0,
    }


if __name__ == "__main__":
    main()
