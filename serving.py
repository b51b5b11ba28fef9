"""What the served app adds around Gradio's server: fair queueing, bounded logs, no orphaned uploads.

Gradio queues every job it is sent, runs jobs whose client never listens for the answer,
prints a full traceback (with the whole input in it) for a malformed file path, and leaves an
upload it refused (a file named ``..``: HTTP 400) in its cache forever. :class:`RequestGuard`, an
ASGI middleware, and :func:`lifespan`, a FastAPI lifespan, close those gaps without touching
Gradio itself; :func:`app.launch` installs both through ``launch(app_kwargs=...)``.

- A client (by address) may have at most :data:`PER_CLIENT_QUEUED` jobs waiting; one more is
  HTTP 429 with a one-line reason, so one client cannot fill the queue for everyone.
- A waiting job whose client has not started listening for its answer within
  :data:`LISTEN_GRACE` seconds is dropped before it runs (Gradio already drops the jobs of a
  client that listened and went away).
- An API body over :data:`MAX_BODY` bytes, or one holding a file path longer than the system
  allows (:data:`MAX_PATH`), is refused with one short log line instead of a traceback.
- Upload leftovers Gradio no longer tracks are deleted on the app's cache schedule and when
  the server stops.

Behind a reverse proxy every client has the proxy's address unless the server is told to trust
its ``X-Forwarded-For`` (uvicorn's ``forwarded_allow_ips``); the per-client limit then applies
to all clients together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

PER_CLIENT_QUEUED = 8
"""Jobs one client address may have waiting in the queue (running ones not counted)."""
LISTEN_GRACE = 30.0
"""Seconds a waiting job's client has to start listening for its answer before the job is dropped."""
MAX_BODY = 256 * 1024
"""Largest JSON API body accepted: a call names at most a few files; audio goes through uploads."""
MAX_PATH = 4096
"""Longest file path accepted in a call (Linux's ``PATH_MAX``): anything longer names no file."""
_QUEUED_PATH = re.compile(r"/(queue/join|call/(v2/)?[^/]+)/?$")
_LISTEN_CALL = re.compile(r"/call/(v2/)?[^/]+/(?P<event>[^/]+)/?$")
_UPLOAD_LEFTOVER = re.compile(r"tmp[\w-]{6,}")
"""Names of the temporary files Gradio streams an upload into, before it moves them to a folder of their own."""
_HASH_FOLDER = re.compile(r"[0-9a-f]{64}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class QueueWatch:
    """What the guard knows about the served ``gr.Blocks``' queue: who waits, and which sessions listen for answers."""

    def __init__(self, blocks: Any) -> None:
        self.blocks = blocks
        self.listening: Counter[str] = Counter()
        """Sessions with an open answer stream, and how many."""

    def queued(self, client: str) -> int:
        """Jobs from ``client`` waiting (not yet running) in the queue."""
        return sum(1 for event in self._waiting() if _client_of(event) == client)

    async def drop_unheard(self, now: float | None = None) -> int:
        """Drop the waiting jobs whose client has not listened for :data:`LISTEN_GRACE` s; return how many."""
        queue = getattr(self.blocks, "_queue", None)
        if queue is None:
            return 0
        now = time.monotonic() if now is None else now
        unheard = [
            event
            for event in self._waiting()
            if now - event.enqueue_time > LISTEN_GRACE and event.session_hash not in self.listening
        ]
        for event in unheard:
            await queue.clean_events(event_id=event._id)
        if unheard:
            logger.warning("Dropped %d queued job(s) whose clients never listened for the answer", len(unheard))
        return len(unheard)

    def session_listened(self, scope: Scope) -> str | None:
        """The session whose answers this GET streams (``/queue/data``, ``/call/<api>/<event>``), if it is one."""
        path = scope.get("path", "")
        if path.rstrip("/").endswith("/queue/data"):
            return (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash") or [None])[0]
        if match := _LISTEN_CALL.search(path):
            event_id = match["event"]
            event = getattr(getattr(self.blocks, "_queue", None), "event_ids_to_events", {}).get(event_id)
            return event.session_hash if event is not None else event_id
        return None

    def _waiting(self) -> Iterator[Any]:
        queue = getattr(self.blocks, "_queue", None)
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            yield from list(event_queue.queue)


class RequestGuard:
    """ASGI middleware in front of Gradio's routes: body and path limits, the per-client queue limit, listener tracking."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], watch: QueueWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        listening = self.watch.listening
        if scope["method"] == "GET" and (session := self.watch.session_listened(scope)) is not None:
            listening[session] += 1
            try:
                return await self.app(scope, receive, send)
            finally:
                listening[session] -= 1
                if listening[session] <= 0:
                    del listening[session]
        if scope["method"] != "POST" or path.endswith("/upload"):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown",))[0]
        body = await _read_body(receive, MAX_BODY)
        if body is None:
            logger.warning("Refused a request to %s from %s: body over %d bytes", path, client, MAX_BODY)
            return await _respond(send, 413, f"Request body over {MAX_BODY} bytes.")
        if _has_absurd_path(body):
            logger.warning("Refused a request to %s from %s: a file path over %d characters", path, client, MAX_PATH)
            return await _respond(send, 400, f"A file path over {MAX_PATH} characters names no file.")
        if _QUEUED_PATH.search(path) and self.watch.queued(client) >= PER_CLIENT_QUEUED:
            logger.warning("Refused a job from %s: %d of its jobs already wait", client, PER_CLIENT_QUEUED)
            return await _respond(send, 429, f"You already have {PER_CLIENT_QUEUED} requests waiting: wait for their answers.")
        await self.app(scope, _replay(body, receive), send)


def _client_of(event: Any) -> str | None:
    client = getattr(getattr(event, "request", None), "client", None)
    return getattr(client, "host", None)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already read ``body`` over once, then waits on the real one (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _has_absurd_path(body: bytes) -> bool:
    """Whether a JSON body holds a ``"path"`` (a Gradio ``FileData``'s) longer than :data:`MAX_PATH`."""
    if len(body) <= MAX_PATH:
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and len(path) > MAX_PATH:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def _respond(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def sweep_upload_leftovers(folder: Path, max_age: float) -> int:
    """Delete what refused uploads left in Gradio's upload ``folder``: temporary files and empty hash folders older than ``max_age`` s.

    Files Gradio tracks live inside the hash folders and are its own delete schedule's; only
    top-level temporary files (an upload that never got its folder) and emptied folders are
    touched here. Returns how many entries went.
    """
    cutoff, removed = time.time() - max_age, 0
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError, OSError):
                if entry.stat().st_mtime > cutoff:
                    continue
                if entry.is_file() and _UPLOAD_LEFTOVER.fullmatch(entry.name):
                    entry.unlink()
                    removed += 1
                elif entry.is_dir() and _HASH_FOLDER.fullmatch(entry.name) and not any(entry.iterdir()):
                    entry.rmdir()
                    removed += 1
    return removed


def lifespan(watch: QueueWatch, folder: Callable[[], Path], every: float, max_age: float):
    """A FastAPI lifespan: every few seconds drop unheard jobs; every ``every`` s sweep upload leftovers; at shutdown, all of them.

    ``folder`` is called when the server runs (Gradio decides its upload folder then).
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async def chores() -> None:
            last_sweep = time.monotonic()
            while True:
                await asyncio.sleep(min(5.0, every))
                await watch.drop_unheard()
                if time.monotonic() - last_sweep >= every:
                    await asyncio.to_thread(sweep_upload_leftovers, folder(), max_age)
                    last_sweep = time.monotonic()

        task = asyncio.create_task(chores())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sweep_upload_leftovers(folder(), 0.0)

    return run
