"""An aiohttp server, unchanged under ``python -m plait run``:
``python aiohttp_app.py PORT`` serves 127.0.0.1:PORT until SIGINT/SIGTERM.

Routes: ``/`` (text), ``/loop`` (the running loop's class), ``/big`` (a
streamed, chunked 4 MiB body), ``POST /echo`` (the body back, with its
length), ``/gather/{key}?n=N`` (answers only once N requests for ``key``
are in flight together: concurrent requests, no timing), ``/ws`` (a
websocket that upper-cases each text message). Access log lines and the
start/stop lines go to stdout through ``logging``."""

import asyncio
import hashlib
import logging
import sys

from aiohttp import WSMsgType, web

CHUNK = bytes(range(256)) * 256  # 64 KiB
CHUNKS = 64  # 4 MiB in all

log = logging.getLogger("app")


async def index(request):
    return web.Response(text="hello from aiohttp\n")


async def loop_class(request):
    loop = asyncio.get_running_loop()
    return web.Response(text=f"{type(loop).__module__}.{type(loop).__qualname__}")


async def big(request):
    response = web.StreamResponse(headers={"X-Sha256": hashlib.sha256(CHUNK * CHUNKS).hexdigest()})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(CHUNKS):
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def echo(request):
    body = await request.read()
    return web.Response(body=body, headers={"X-Length": str(len(body))})


async def gather(request):
    key, n = request.match_info["key"], int(request.query["n"])
    groups = request.app["groups"]
    arrived, everyone = groups.setdefault(key, ([0], asyncio.Event()))
    arrived[0] += 1
    if arrived[0] == n:
        everyone.set()
    await asyncio.wait_for(everyone.wait(), 60)  # a hang bound, not a timing
    return web.Response(text=f"{key}: {n} together")


async def ws(request):
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type == WSMsgType.TEXT:
            await socket.send_str(message.data.upper())
    return socket


async def on_startup(app):
    log.info("startup")


async def on_cleanup(app):
    log.info("cleanup")


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    app = web.Application()
    app["groups"] = {}
    app.add_routes([web.get("/", index), web.get("/loop", loop_class), web.get("/big", big),
                    web.post("/echo", echo), web.get("/gather/{key}", gather), web.get("/ws", ws)])
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log_format='"%r" %s %b',
                print=lambda *args: print(*args, flush=True))
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
