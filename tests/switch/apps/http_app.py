"""A ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (port 0): serves the
files of ``sys.argv[1]`` and a small handler at ``/square?n=N``; ``/quit``
stops it. Prints ``port N`` when it listens; its log lines (the standard
handler's) go to stderr."""

import http.server
import json
import sys
import threading
from functools import partial
from urllib.parse import parse_qs, urlparse

import _facts

hits = 0
hits_lock = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        global hits
        url = urlparse(self.path)
        with hits_lock:
            hits += 1
        if url.path == "/square":
            n = int(parse_qs(url.query)["n"][0])
            self._reply(json.dumps({"n": n, "square": n * n}).encode())
        elif url.path == "/quit":
            self._reply(b"bye")
            threading.Thread(target=self.server.shutdown).start()
        else:
            super().do_GET()

    def _reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print("switch:", json.dumps(_facts.switched()), flush=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                         partial(Handler, directory=sys.argv[1]))
print("port", server.server_address[1], flush=True)
with server:
    server.serve_forever(poll_interval=0.05)
print("served", hits, "requests", flush=True)
