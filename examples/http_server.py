"""A small asyncio HTTP/1.1 server (keep-alive, streams API) that runs the
same on asyncio's loop and on plait's.

    python examples/http_server.py              # plait's loop, port 8080
    python examples/http_server.py --loop asyncio --port 0

It answers every GET with a short plain-text body naming the loop, and
``/echo?...`` with the query string. Stop it with Ctrl-C: plait.run, like
asyncio.run, cancels the main task and closes the server cleanly.
"""

import argparse
import asyncio
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop_name = type(asyncio.get_running_loop()).__module__
    try:
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _version = (line.split(" ") + ["", ""])[:3]
            if method != "GET":
                status, body = "405 Method Not Allowed", b"only GET\n"
            elif target.startswith("/echo?"):
                status, body = "200 OK", target[len("/echo?"):].encode() + b"\n"
            else:
                status, body = "200 OK", f"hello from {loop_name}\n".encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            if b"connection: close" in request.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port)
    print(f"serving on http://{host}:{server.sockets[0].getsockname()[1]}/", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("plait", "asyncio"), default="plait")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    try:
        if args.loop == "plait":
            import plait

            plait.run(serve(args.host, args.port))
        else:
            asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
