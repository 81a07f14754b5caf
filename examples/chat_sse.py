"""Stream a conversation to a browser over server-sent events while another process appends to it.

    pip install "kvstore-sdk[sqlite]" starlette uvicorn httpx

    python examples/chat_sse.py --serve            # http://127.0.0.1:8000/chat/demo/events
    curl -N http://127.0.0.1:8000/chat/demo/events?start=0
    curl -d '{"role": "user", "content": "hi"}' http://127.0.0.1:8000/chat/demo/messages

    python examples/chat_sse.py                    # a self-contained run: server, writer process, client

Each message is one SSE event whose ``id`` is its position in the conversation: a browser's
``EventSource`` that reconnects sends ``Last-Event-ID`` and the stream resumes right after it,
with no gap and no duplicate (`AsyncChatHistory.watch`). The messages live in the embedded
default store (``./.kvstore/kvstore.db``, SQLite), so any process that opens it (another web
worker, an agent, ``kvstore append``) feeds every open stream.

With a PostgreSQL primary (``KVSTORE_DATABASE__TYPE=postgres``, ``KVSTORE_DATABASE__URL=...``,
``KVSTORE_DATABASE__FALLBACK=sqlite``) that was down when the server started, a stream follows the
fallback until the primary serves; then its watch ends with `WatchRestartError` and the stream sends
a ``reset`` event whose empty ``id`` clears the browser's ``Last-Event-ID``: the reconnect starts
over from the primary, and the page clears its view
(``source.addEventListener("reset", () => list.replaceChildren())``).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from kvstore import AsyncChatHistory, AsyncStorageManager, ChatHistory, ChatMessage, StorageManager, WatchRestartError


def make_app() -> Starlette:
    """The web app: an SSE stream per conversation, and a route to post a message."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncStorageManager() as storage:  # memory cache + ./.kvstore/kvstore.db
            app.state.storage = storage
            yield

    def history(request: Request) -> AsyncChatHistory[ChatMessage]:
        return AsyncChatHistory(request.app.state.storage.database, request.path_params["conversation"])

    async def events(request: Request) -> StreamingResponse:
        # Resume after the last event the browser saw, else from ?start= (default: the last 20).
        last_id = request.headers.get("last-event-id")
        start = int(last_id) + 1 if last_id is not None else int(request.query_params.get("start", -20))
        messages = history(request).watch(start=start)

        async def stream() -> AsyncIterator[bytes]:
            # When the browser goes away, Starlette cancels this generator: the watch is released.
            try:
                async for position, message in messages:
                    data = orjson.dumps(message.model_dump(mode="json")).decode()
                    yield f"id: {position}\nevent: message\ndata: {data}\n\n".encode()
            except WatchRestartError:
                # The primary serves again, at other positions than the fallback this stream followed:
                # an empty id clears Last-Event-ID, so the browser's reconnect starts over (?start=).
                yield b"id:\nevent: reset\ndata: {}\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def post(request: Request) -> JSONResponse:
        message = ChatMessage.model_validate(orjson.loads(await request.body()))
        position = await history(request).add(message)
        return JSONResponse({"position": position}, status_code=201)

    routes = [
        Route("/chat/{conversation}/events", events),
        Route("/chat/{conversation}/messages", post, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


app = make_app()


# --- the self-contained run -------------------------------------------------------------


def writer(conversation: str, count: int) -> None:
    """Another process: an agent appending its turns (sync API, same SQLite file)."""
    with StorageManager() as storage:
        history = ChatHistory(storage.database, conversation)
        for turn in range(count):
            history.add(ChatMessage(role="assistant", content=f"token batch {turn}", id=f"{conversation}-{turn}"))
            time.sleep(0.05)


def demo(count: int = 5) -> None:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    conversation = f"sse-demo-{int(time.time() * 1000)}"
    process = multiprocessing.get_context("spawn").Process(target=writer, args=(conversation, count))
    try:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/chat/{conversation}/events?start=0", timeout=30) as reply:
            process.start()
            received = 0
            for line in reply.iter_lines():
                if line.startswith(("id:", "data:")):
                    print(line)
                if line.startswith("data:"):
                    received += 1
                    if received == count:
                        break
        process.join(30)
        print(f"streamed {received} messages appended by process {process.pid}")
    finally:
        server.should_exit = True
        thread.join(10)


def _main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="serve the app until interrupted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.serve:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    else:
        demo()


if __name__ == "__main__":
    _main()
