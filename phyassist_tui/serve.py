"""``phyassist serve``: the workspace in a browser, for the counselor only.

textual-serve alone accepts any local user and any web page: a websocket from another uid
or from ``http://evil.example`` (DNS rebinding, a page in the counselor's own browser) would
spawn a TUI process as the counselor and let it guess passphrases. This server adds:

* a secret token made fresh at each launch, required on every page and websocket request
  (``?token=`` or ``/ws/<token>``); it is printed once and written to a 0600 file
  (``serve.token`` in the data directory), never logged;
* a Host check (``localhost``/``127.0.0.1``/``[::1]`` with our port: no DNS rebinding) and,
  on the websocket, an Origin check (a browser page must come from this server; a client
  that sends no Origin, i.e. not a browser, still needs the token);
* a cap on concurrent sessions (each is a TUI process of ~0.5 GB), answered 503 beyond it;
* TUI processes started with ``PHYASSIST_MODEL_LOAD_BEFORE_UNLOCK=0``: no model is loaded
  for a connection that never unlocks;
* "address in use" as a clear message, not a traceback.

Wrong passphrases back off in every process (``engine.vault.unlock_throttle``).
"""

from __future__ import annotations

import errno
import hmac
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from textual_serve.server import Server

from engine.vault.atomicio import atomic_write, ensure_dir

TOKEN_FILE = "serve.token"
DEFAULT_MAX_SESSIONS = 2
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# textual-serve's page plus: the terminal takes the keys on load (no click first); no web font
SERVE_TEMPLATES = Path(__file__).resolve().parent / "serve_templates"


def tui_command(model: str | None = None) -> str:
    command = [sys.executable, "-m", "phyassist_tui", "tui"]
    if model:
        command += ["--model", model]
    return shlex.join(command)


class GuardedServer(Server):
    """textual-serve's Server behind a per-launch token, Host/Origin checks and a session cap."""

    def __init__(
        self,
        command: str,
        *,
        port: int,
        token: str | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        title: str = "PhyAssist",
    ) -> None:
        super().__init__(
            command, host="localhost", port=port, title=title, templates_path=SERVE_TEMPLATES
        )
        self.token = token or secrets.token_urlsafe(32)
        self.max_sessions = max_sessions
        self.sessions = 0
        self.allowed_hosts = {f"{h}:{port}" for h in LOCAL_HOSTS}
        self.allowed_origins = {f"http://{h}:{port}" for h in LOCAL_HOSTS}

    @property
    def url(self) -> str:
        return f"{self.public_url}/?token={self.token}"

    def _token_ok(self, request: web.Request) -> bool:
        # the page's script appends "?width=..." to the websocket URL, so there the token is
        # the last path segment (/ws/<token>); elsewhere it is the ?token= query
        given = request.match_info.get("token") or request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in self.allowed_hosts:
            raise web.HTTPForbidden(text="Unknown host.")
        if request.path.startswith("/static/"):
            return await handler(request)  # the page's scripts and styles: nothing secret
        if not self._token_ok(request):
            raise web.HTTPForbidden(text="Open the address printed by `phyassist serve`.")
        if request.path == "/ws" or request.path.startswith("/ws/"):
            origin = request.headers.get("Origin")
            if origin is not None and origin not in self.allowed_origins:
                raise web.HTTPForbidden(text="Cross-origin websocket refused.")
        return await handler(request)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.router.add_get("/ws/{token}", self.handle_websocket)
        app.middlewares.append(self.guard)
        return app

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        response = await super().handle_index(request)
        # the page's websocket URL carries the token too
        body = response.text.replace('/ws"', f'/ws/{self.token}"')
        response.text = body
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        if self.sessions >= self.max_sessions:
            raise web.HTTPServiceUnavailable(
                text=f"{self.max_sessions} sessions are open already; close one first."
            )
        self.sessions += 1
        try:
            return await super().handle_websocket(request)
        finally:
            self.sessions -= 1

    async def on_startup(self, app: web.Application) -> None:
        return None  # the launch message is printed by serve() with the token URL


def write_token(data_dir: Path, token: str) -> Path:
    ensure_dir(data_dir)
    path = data_dir / TOKEN_FILE
    atomic_write(path, (token + "\n").encode("ascii"))
    return path


def serve(
    command: str, *, port: int, data_dir: Path, max_sessions: int = DEFAULT_MAX_SESSIONS
) -> int:
    """Run until Ctrl+C; returns the exit status (2: the port is taken)."""
    # each session's TUI loads the model only once its vault is unlocked (set for the
    # sessions' shell command only, not in this process's environment)
    command = f"PHYASSIST_MODEL_LOAD_BEFORE_UNLOCK=0 {command}"
    server = GuardedServer(command, port=port, max_sessions=max_sessions)
    token_path = write_token(data_dir, server.token)
    print(
        f"PhyAssist is served for you only at:\n\n  {server.url}\n\n"
        f"(the token is also in {token_path}, readable by you only; it changes at each "
        f"launch). At most {max_sessions} browser sessions at once. Ctrl+C stops it.",
        flush=True,
    )
    try:
        server.serve()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower():
            print(
                f"Port {port} on localhost is already in use (another `phyassist serve`?). "
                f"Stop it, or choose another port: phyassist serve --port {port + 1}",
                file=sys.stderr,
            )
            return 2
        raise
    finally:
        with __import__("contextlib").suppress(FileNotFoundError):
            token_path.unlink()
    return 0
