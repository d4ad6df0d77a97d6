"""A small client for an OpenAI-compatible inference server (vLLM), with errors a counselor reads.

Only what the remote backend needs: the served models, streaming completions over token ids,
and vLLM's run-time LoRA endpoints. Every failure becomes a :class:`~engine.errors.ServerError`
that says what happened (down, too slow, key refused, adapter unknown) and what to do; the
API key never appears in a message. Torch-free: the TUI and ``phyassist server`` import it.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from engine.errors import ServerError

if TYPE_CHECKING:
    from engine.settings import Settings

__all__ = [
    "API_KEY_FILE",
    "ServerClient",
    "api_key_path",
    "client_for",
    "read_api_key",
    "server_address",
]

API_KEY_FILE = "api-key"


def api_key_path(settings: Settings) -> Path:
    """Where the API key is read from: the setting, else the file ``phyassist server`` writes."""
    return settings.backend.api_key_file or settings.server_dir / API_KEY_FILE


def read_api_key(settings: Settings) -> str | None:
    """``PHYASSIST_BACKEND__API_KEY`` / ``backend.api_key``, else the key file.

    A key file others can read is refused (it would let any user of the machine reach every
    counselor's patients' adapters); None: no key at all (a server started without one)."""
    if settings.backend.api_key:
        return settings.backend.api_key
    path = api_key_path(settings)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServerError(f"Cannot read the API key file {path}: {exc.strerror}.") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerError(
            f"The API key file {path} can be read by other users; run `chmod 600 {path}`."
        )
    key = path.read_text(encoding="utf-8").strip()
    return key or None


def write_api_key(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` with mode 0600 from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    os.replace(tmp, path)


class ServerClient:
    """One server, one key; thread-safe (httpx.Client is)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        socket: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Through a Unix socket the URL's host is ignored (only its path is used).
        self.where = f"unix:{socket}" if socket else self.base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.read_timeout_s = read_timeout_s
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=httpx.HTTPTransport(uds=str(socket)) if socket else None,
            trust_env=False,  # a proxy variable must not send patient text elsewhere
        )
        self._lock = threading.Lock()

    # The server's root (vLLM's /v1/load_lora_adapter lives under the same /v1 prefix).
    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.text)
        return response

    def models(self) -> list[dict[str, Any]]:
        """The served models (the base and the loaded adapters), as the server lists them."""
        data = self._request("GET", "/models").json()
        return list(data.get("data", []))

    def load_lora(self, name: str, path: Path) -> None:
        self._request(
            "POST", "/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}
        )

    def unload_lora(self, name: str) -> None:
        """Unload ``name``; one the server does not hold is not an error."""
        try:
            self._request("POST", "/unload_lora_adapter", json={"lora_name": name})
        except ServerError as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise

    def stream_completion(
        self, payload: dict[str, Any], cancel: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """The server-sent events of one streaming completion, as dicts.

        Closing the iterator (or ``cancel``) closes the connection, which aborts the
        request on the server."""
        body = dict(payload, stream=True)
        try:
            with self._http.stream("POST", "/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response.status_code, response.text)
                for line in response.iter_lines():
                    if cancel.is_set():
                        return
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event and "choices" not in event:
                        error = event["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise ServerError(f"The server stopped the generation: {message}")
                    yield event
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        # The body ended without "[DONE]": the server went away mid-answer.
        raise self._transport_error(httpx.RemoteProtocolError("stream ended early"))

    # Messages -------------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> ServerError:
        where = self.where
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerError(
                f"The inference server at {where} is not reachable (is `phyassist server` "
                "running?). Nothing was lost: try again once it is up."
            )
        if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout):
            return ServerError(
                f"The inference server at {where} did not answer within "
                f"{self.read_timeout_s:g} s (busy or stuck). What was written so far is kept; "
                "try again, or raise backend.read_timeout_s."
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return ServerError(
                f"The inference server at {where} closed the connection mid-answer (it "
                "stopped or restarted). What was written so far is kept."
            )
        return ServerError(f"Talking to the inference server at {where} failed: {exc}")

    def _status_error(self, status: int, text: str) -> ServerError:
        detail = _error_detail(text)
        if status == 401:
            error = ServerError(
                f"The inference server at {self.where} refused the API key. Use the key "
                "`phyassist server` printed (backend.api_key_file or PHYASSIST_BACKEND__API_KEY)."
            )
        elif status == 404:
            error = ServerError(f"The server does not hold that model or adapter: {detail}")
        else:
            error = ServerError(f"The inference server refused the request ({status}): {detail}")
        error.status = status  # type: ignore[attr-defined]
        return error


def _error_detail(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300] or "no detail"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


def server_address(settings: Settings) -> str:
    """Where ``settings.backend`` reaches the server, as messages name it."""
    backend = settings.backend
    return f"unix:{backend.socket}" if backend.socket else backend.base_url


def client_for(settings: Settings) -> ServerClient:
    """The client ``settings.backend`` describes (the key read now)."""
    backend = settings.backend
    return ServerClient(
        backend.base_url,
        read_api_key(settings),
        connect_timeout_s=backend.connect_timeout_s,
        read_timeout_s=backend.read_timeout_s,
        socket=backend.socket,
    )
