"""What the served app adds around Gradio's server: a fair share for every client, bounded logs, no orphaned uploads.

Gradio queues every job it is sent in arrival order, serves ``/run/<api>`` outside the queue,
runs jobs whose client never listens for the answer, prints a full traceback for a malformed
file path or a cut-off upload, and leaves an upload it refused (a file named ``..``: HTTP 400)
in its cache forever. :class:`RequestGuard`, an ASGI middleware, :func:`share_fairly` and
:func:`lifespan`, a FastAPI lifespan, close those gaps without touching Gradio itself;
:func:`app.launch` installs them.

- Clients (by address) share the model fairly: a waiting job of the client with the fewest
  running jobs starts first; a client runs at most :data:`PER_CLIENT_RUNNING` jobs, and a
  second one only while a slot stays free for someone else; and the model's runs take turns round robin between clients
  (:class:`ClientTurns`), so ten jobs from one client get no more of the model than one job
  from another.
- A client may have at most :data:`PER_CLIENT_QUEUED` jobs waiting; one more is HTTP 429 with a
  one-line reason, so one client cannot fill the queue for everyone.
- A waiting job whose client has not started listening for its answer within
  :data:`LISTEN_GRACE` seconds is dropped before it runs (Gradio already drops the jobs of a
  client that listened and went away).
- An API body over :data:`MAX_BODY` bytes, or one holding a file path longer than the system
  allows (:data:`MAX_PATH`), is refused with one short log line instead of a traceback; so is
  a call naming a file that was not uploaded, and an upload cut off by its client.
- Upload leftovers Gradio no longer tracks are deleted on the app's cache schedule and when
  the server stops; once the queue goes idle after work, freed memory goes back to the system.

Behind a reverse proxy every client has the proxy's address unless the server is told to trust
its ``X-Forwarded-For`` (uvicorn's ``forwarded_allow_ips``); the per-client limits then apply
to all clients together.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from gradio.context import LocalContext
from gradio.exceptions import Error, InvalidPathError
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)

PER_CLIENT_QUEUED = 8
"""Jobs one client address may have waiting in the queue (running ones not counted)."""
PER_CLIENT_RUNNING = 2
"""Jobs one client address may have running at once: on two cores, more would only slow the others' down."""
LISTEN_GRACE = 30.0
"""Seconds a waiting job's client has to start listening for its answer before the job is dropped."""
MAX_BODY = 256 * 1024
"""Largest JSON API body accepted: a call names at most a few files; audio goes through uploads."""
MAX_PATH = 4096
"""Longest file path accepted in a call (Linux's ``PATH_MAX``): anything longer names no file."""
CHORES_EVERY = 5.0
"""Seconds between the server's small chores: dropping unheard jobs, giving memory back when idle."""
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
        self._seen = 0

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

    def went_idle(self) -> bool:
        """Whether the queue has jobs neither waiting nor running, and took new ones since this last said so."""
        queue = getattr(self.blocks, "_queue", None)
        if queue is None or len(queue) or any(job is not None for job in queue.active_jobs):
            return False
        seen, self._seen = self._seen, queue.events_recorded
        return queue.events_recorded != seen

    def _waiting(self) -> Iterator[Any]:
        queue = getattr(self.blocks, "_queue", None)
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            yield from list(event_queue.queue)


def next_job(waiting: Sequence[Any], running: Counter[str | None], limit: int | None) -> Any | None:
    """The waiting job to start now, or ``None``: fair between clients, not first come, first served.

    The earliest job of the client with the fewest running jobs goes first. A client that
    already runs a job starts another only while it runs fewer than :data:`PER_CLIENT_RUNNING`
    and a slot stays free after it, so a client with nothing running always finds one (unless
    as many clients as there are slots are busy).
    """
    busy = sum(running.values())
    best: tuple[tuple[int, int], Any] | None = None
    for index, event in enumerate(waiting):
        client = _client_of(event)
        if running[client] and (running[client] >= PER_CLIENT_RUNNING or (limit is not None and busy + 1 >= limit)):
            continue
        key = (running[client], index)
        if best is None or key < best[0]:
            best = (key, event)
    return best[1] if best is not None else None


def share_fairly(queue: Any) -> None:
    """Make Gradio's ``queue`` start jobs by :func:`next_job` instead of in arrival order.

    Gradio's worker loop asks ``queue.get_events()`` for the next job whenever a worker is
    free; this replaces that method on the instance. Batched functions (the app has none) keep
    Gradio's own choice.
    """
    arrival_order = queue.get_events

    def get_events() -> tuple[list[Any], bool, str] | None:
        for concurrency_id, event_queue in list(queue.event_queue_per_concurrency_id.items()):
            limit = event_queue.concurrency_limit
            if not event_queue.queue or (limit is not None and event_queue.current_concurrency >= limit):
                continue
            if event_queue.queue[0].fn.batch:
                return arrival_order()
            running = Counter(
                _client_of(event)
                for job in queue.active_jobs
                if job is not None
                for event in job
                if event.concurrency_id == concurrency_id
            )
            if (event := next_job(event_queue.queue, running, limit)) is not None:
                event_queue.queue.remove(event)
                return [event], False, concurrency_id
        return None

    queue.get_events = get_events


def request_client() -> str | None:
    """The address of the client whose request this thread is handling (Gradio sets it around each call)."""
    request = LocalContext.request.get(None)
    client = getattr(request, "client", None) if request is not None else None
    return getattr(client, "host", None)


class ClientTurns:
    """The model's runs take turns round robin between clients, first come, first served within one.

    Set as the engine's ``turns`` (in place of ``engine.FairTurns``, which alternates between
    songs): a client analysing ten long songs gets every other turn, not ten turns in eleven,
    when another client's short song comes in. ``client_of`` names the client of the calling
    thread (by default :func:`request_client`).
    """

    def __init__(self, client_of: Callable[[], str | None] = request_client) -> None:
        self._client_of = client_of
        self._changed = threading.Condition()
        self._waiting: dict[str | None, deque[object]] = {}
        """Each client's runs waiting for a turn; the dict's order is the round."""
        self._holder: object | None = None

    @property
    def waiting(self) -> int:
        """Runs holding or waiting for a turn."""
        with self._changed:
            return sum(map(len, self._waiting.values())) + (self._holder is not None)

    def __enter__(self) -> None:
        run = object()
        with self._changed:
            self._waiting.setdefault(self._client_of(), deque()).append(run)
            if self._holder is None:
                self._pass_on()
            self._changed.wait_for(lambda: self._holder is run)

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._holder = None
            self._pass_on()

    def _pass_on(self) -> None:
        """Give the turn to the first client in the round, which then goes to the round's end."""
        if self._waiting:
            client = next(iter(self._waiting))
            runs = self._waiting.pop(client)
            self._holder = runs.popleft()
            if runs:
                self._waiting[client] = runs
            self._changed.notify_all()


def quiet_refusals(blocks: Any) -> None:
    """Make a call naming a file that was not uploaded one log line and a readable error, not a traceback.

    Gradio raises ``InvalidPathError`` while preparing the inputs, prints its traceback and
    answers ``{"error": null}``; this wraps ``blocks.process_api`` (on the instance) so that the
    client reads why and the log gets one line.
    """
    process_api = blocks.process_api

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await process_api(*args, **kwargs)
        except InvalidPathError as err:
            request = kwargs.get("request")
            client = getattr(getattr(request, "client", None), "host", "unknown")
            logger.warning("Refused a call from %s: %s", client, _shorten(str(err)))
            raise Error("A file in this call was not uploaded first: upload it, then name it.", print_exception=False) from None

    blocks.process_api = guarded


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        client = (scope.get("client") or ("unknown",))[0]
        if scope["method"] == "POST" and path.endswith("/upload"):
            try:
                return await self.app(scope, receive, send)
            except ClientDisconnect:
                logger.warning("An upload from %s was cut off by the client", client)
                return None
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
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


MMAP_THRESHOLD = 1024 * 1024
"""Allocations from this size up get pages of their own, which go back to the system when freed."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def return_freed_memory() -> bool:
    """Make the heap give memory freed by finished requests back to the system (glibc); ``False`` elsewhere.

    glibc raises its "own pages" threshold as large buffers are freed (up to 32 MB), after which
    a 10-minute song's arrays come from arenas that keep the pages: a server then stays 250 MB
    above its idle size after a burst of long songs. A fixed :data:`MMAP_THRESHOLD` keeps large
    buffers on pages of their own; :func:`give_back_memory` returns what the arenas still hold.
    """
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def give_back_memory() -> bool:
    """Hand the free pages of every heap arena back to the system (``malloc_trim``); ``False`` without glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def lifespan(watch: QueueWatch, folder: Callable[[], Path], every: float, max_age: float):
    """A FastAPI lifespan: every few seconds drop unheard jobs, and give memory back once the queue
    goes idle after work; every ``every`` s sweep upload leftovers; at shutdown, all of them.

    ``folder`` is called when the server runs (Gradio decides its upload folder then).
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async def chores() -> None:
            last_sweep = time.monotonic()
            while True:
                await asyncio.sleep(min(CHORES_EVERY, every))
                await watch.drop_unheard()
                if watch.went_idle():
                    await asyncio.to_thread(give_back_memory)
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
