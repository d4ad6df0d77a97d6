"""`phyassist serve`: only the counselor's browser gets a session (issue 18, item 4).

A real aiohttp server (GuardedServer) on a free localhost port, driven by a raw websocket
client (aiohttp's). Sessions run a tiny stand-in command instead of the TUI, so each
accepted websocket costs a sleeping process, not a TUI.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from phyassist_tui.serve import GuardedServer, write_token
from tests.support import REPO

# announces itself as a Textual app (the prelude textual-serve waits for), then idles until
# the server writes to it (the "quit" message when the websocket closes)
STAND_IN = shlex.join(
    [
        sys.executable,
        "-c",
        "import sys; print('__GANGLION__', flush=True); sys.stdin.buffer.read(1)",
    ]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start(max_sessions: int = 2) -> tuple[GuardedServer, web.AppRunner]:
    port = _free_port()
    server = GuardedServer(STAND_IN, port=port, max_sessions=max_sessions)
    runner = web.AppRunner(await server._make_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return server, runner


async def _ws_status(server, *, token=None, origin=None, host=None, path="/ws") -> int:
    port = server.port
    url = f"http://127.0.0.1:{port}{path}"
    params = {"token": token} if token is not None else {}
    headers = {"Host": host or f"localhost:{port}"}
    if origin is not None:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, params=params, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_websocket_needs_token_origin_and_host():
    async def scenario():
        server, runner = await _start(max_sessions=10)
        port = server.port
        try:
            assert await _ws_status(server) == 403  # no token
            assert await _ws_status(server, token="wrong") == 403
            evil = "http://evil.example"
            assert await _ws_status(server, token=server.token, origin=evil) == 403
            rebind = f"evil.example:{port}"
            assert await _ws_status(server, token=server.token, host=rebind) == 403
            good = f"http://localhost:{port}"
            assert await _ws_status(server, token=server.token, origin=good) == 101
            assert await _ws_status(server, token=server.token) == 101  # not a browser
            path = f"/ws/{server.token}"
            assert await _ws_status(server, origin=good, path=path) == 101
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_index_page_needs_the_token_and_carries_it_to_the_websocket():
    async def scenario():
        server, runner = await _start()
        base = f"http://127.0.0.1:{server.port}/"
        headers = {"Host": f"localhost:{server.port}"}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base, headers=headers) as r:
                    assert r.status == 403
                params = {"token": server.token}
                async with session.get(base, params=params, headers=headers) as r:
                    assert r.status == 200
                    page = await r.text()
                    assert f"/ws/{server.token}" in page
                    assert r.headers["Referrer-Policy"] == "no-referrer"
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_concurrent_sessions_are_capped():
    async def scenario():
        server, runner = await _start(max_sessions=1)
        port = server.port
        url = f"http://127.0.0.1:{port}/ws"
        headers = {"Host": f"localhost:{port}"}
        try:
            async with aiohttp.ClientSession() as session:
                first = await session.ws_connect(
                    url, params={"token": server.token}, headers=headers
                )
                await asyncio.sleep(0.2)
                assert await _ws_status(server, token=server.token) == 503
                await first.close()
                deadline = time.monotonic() + 10
                while server.sessions and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert await _ws_status(server, token=server.token) == 101
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_token_file_is_private(tmp_path: Path):
    path = write_token(tmp_path / "data", "secret-token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == "secret-token"


def test_address_in_use_is_a_clear_message(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            PHYASSIST_HOME=str(tmp_path),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "phyassist_tui", "serve", "--port", str(port)],
            capture_output=True,
            env=env,
            timeout=60,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "already in use" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "serve.token").exists()


@pytest.mark.anyio
async def test_model_waits_for_unlock_when_asked(make_app, settings, fake):
    """serve's sessions: nothing loads the model while the unlock screen shows."""
    from phyassist_tui import app as app_module

    settings = settings.model_copy(update={"model_load_before_unlock": False})
    app = make_app(settings=settings)
    original = app_module.MODEL_LOAD_GRACE_S
    app_module.MODEL_LOAD_GRACE_S = 0.05
    try:
        async with app.run_test() as pilot:
            await pilot.pause(0.5)
            assert app.session.model_state.state == "idle"  # never started
    finally:
        app_module.MODEL_LOAD_GRACE_S = original
    app2 = make_app()
    app_module.MODEL_LOAD_GRACE_S = 0.05
    try:
        async with app2.run_test() as pilot:
            await pilot.pause(0.5)
            assert app2.session.model_state.state != "idle"  # the default preloads while typing
    finally:
        app_module.MODEL_LOAD_GRACE_S = original


@pytest.mark.anyio
async def test_tui_says_when_a_record_was_rolled_back(make_app, vault, settings):
    """The unlock screen reports what the vault found older or missing (issue 18, item 1)."""
    from engine.vault.store import Store
    from tests.tui.fakes import PASSPHRASE, open_workspace, wait_for

    with Store.open(vault, PASSPHRASE, settings=settings) as store:
        sun = next(s for s in store.list_patients() if s.name == "Sun")
        record = vault / "patients" / sun.id / "record.bin"
        old = record.read_bytes()
        store.save_patient(store.load_patient(sun.id))
    record.write_bytes(old)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_workspace(pilot)
        await wait_for(
            pilot,
            lambda: any("rolled back" in str(n.message) for n in app._notifications),
            what="rollback notification",
        )
