"""A plain ASGI app for uvicorn, unchanged under ``python -m plait run``:
``python -m uvicorn uvicorn_app:app --host 127.0.0.1 --port PORT``.

Routes: ``/`` (text), ``/loop`` (the running loop's class), ``/big`` (a
streamed 4 MiB body in 64 KiB parts), ``POST /echo`` (the body back, with
its length), ``/gather/{key}?n=N`` (answers only once N requests for
``key`` are in flight together: concurrent requests, no timing); lifespan
startup and shutdown print a line each."""

import asyncio
import hashlib
from urllib.parse import parse_qs

CHUNK = bytes(range(256)) * 256  # 64 KiB
CHUNKS = 64  # 4 MiB in all

groups = {}


async def send_text(send, text, status=200, headers=()):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            print("app: startup", flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print("app: shutdown", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive):
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    path, method = scope["path"], scope["method"]
    if path == "/":
        await send_text(send, "hello from uvicorn\n")
    elif path == "/loop":
        loop = asyncio.get_running_loop()
        await send_text(send, f"{type(loop).__module__}.{type(loop).__qualname__}")
    elif path == "/big":
        digest = hashlib.sha256(CHUNK * CHUNKS).hexdigest().encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-sha256", digest)]})
        for i in range(CHUNKS):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i < CHUNKS - 1})
    elif path == "/echo" and method == "POST":
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path.startswith("/gather/"):
        key, n = path[len("/gather/"):], int(parse_qs(scope["query_string"].decode())["n"][0])
        arrived, everyone = groups.setdefault(key, ([0], asyncio.Event()))
        arrived[0] += 1
        if arrived[0] == n:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 60)  # a hang bound, not a timing
        await send_text(send, f"{key}: {n} together")
    else:
        await send_text(send, "not found\n", status=404)
