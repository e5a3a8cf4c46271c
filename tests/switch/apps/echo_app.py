"""A socketserver.ThreadingTCPServer echo server on 127.0.0.1 (port 0) and
client threads talking to it at once. Prints what came back."""

import json
import socket
import socketserver
import threading

import _facts

CLIENTS, LINES = 8, 50
print("switch:", json.dumps(_facts.switched()), flush=True)


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())


def client(n, out):
    with socket.create_connection(server.server_address, timeout=300) as sock:
        stream = sock.makefile("rwb")
        got = []
        for i in range(LINES):
            stream.write(f"client {n} line {i}\n".encode())
            stream.flush()
            got.append(stream.readline().decode())
        out[n] = got


server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
replies = {}
clients = [threading.Thread(target=client, args=(n, replies)) for n in range(CLIENTS)]
for thread in clients:
    thread.start()
for thread in clients:
    thread.join()
server.shutdown()
serving.join()
server.server_close()
print("clients", len(replies))
print("all echoed", all(replies[n] == [f"CLIENT {n} LINE {i}\n" for i in range(LINES)]
                        for n in replies))
