"""`phyassist serve` seen from a real browser (headless Chromium), issue 18 item 4.

Needs the Debian ``chromium`` package, which ``./dev test`` does not install: skipped
without it. Run it with ``apt-get install chromium`` then
``python -m pytest tests/tui/test_serve_browser.py``.

The server runs a stand-in session command that records each session it starts (a session
starts only when the server accepts the websocket), so the test sees exactly which pages got
a session: the page opened with the printed URL does; the same page without the token, and a
page on another origin that knows the token, do not.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from phyassist_tui.serve import GuardedServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_server(server: GuardedServer) -> None:
    import asyncio

    from aiohttp import web

    async def main():
        runner = web.AppRunner(await server._make_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", server.port).start()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()


def _browse(url: str, tmp_path: Path) -> str:
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=120,
    )
    return out.stdout.decode(errors="replace")


def _sessions(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_browser_gets_a_session_only_with_the_token_and_from_our_origin(tmp_path: Path):
    marker = tmp_path / "sessions.log"
    stand_in = shlex.join(
        [
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'a').write('session\\n'); "
            "print('__GANGLION__', flush=True); import sys; sys.stdin.buffer.read(1)",
        ]
    )
    port = _free_port()
    server = GuardedServer(stand_in, port=port, max_sessions=4)
    _run_server(server)
    time.sleep(1.0)

    # without the token: refused page, no session
    page = _browse(f"http://localhost:{port}/", tmp_path)
    assert "Open the address printed" in page
    assert _sessions(marker) == 0

    # another origin that knows the token: its websocket is refused
    token = server.token
    evil_port = _free_port()
    evil_page = (
        f"<html><body><script>new WebSocket('ws://localhost:{port}/ws/{token}?width=80&height=24')"
        "</script>evil</body></html>"
    ).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil_page)

        def log_message(self, *args):
            pass

    evil = HTTPServer(("127.0.0.1", evil_port), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        _browse(f"http://127.0.0.1:{evil_port}/", tmp_path)
    finally:
        evil.shutdown()
    time.sleep(0.5)
    assert _sessions(marker) == 0

    # the printed URL: the page's own script opens the websocket and a session starts
    _browse(server.url, tmp_path)
    deadline = time.monotonic() + 10
    while _sessions(marker) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sessions(marker) >= 1
