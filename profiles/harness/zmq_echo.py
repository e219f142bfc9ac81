"""The raw pyzmq peer of the server benchmark: an echo server in its own process that does
what a partition does on the wire (a ROUTER, msgpack requests, [id, 0, result] replies, a
dict as its store), and a client that does what ConcordKV-MP's sync client does and
nothing else. It must not time anything.
"""

from __future__ import annotations

import contextlib
import signal

import msgpack
import zmq

from harness.servers import SERVER_START_SECONDS, SPAWN, free_port_block


def echo_server(port: int) -> None:
    """The raw pyzmq peer: one ROUTER, decode each msgpack request, reply [id, 0, result]
    with a dict as the store, exactly the reply shape of a partition."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it; Ctrl-C must not
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    pack = msgpack.Packer(use_bin_type=True).pack
    unpackb = msgpack.unpackb
    store = {}
    while True:
        envelope, body = router.recv_multipart()
        request = unpackb(body, raw=False)
        op = request[1]
        if op == "get":
            result = store.get(request[2])
        elif op == "set":
            store[request[2]] = request[3]
            result = None
        else:  # ping
            result = "pong"
        router.send_multipart([envelope, pack((request[0], 0, result))])


class EchoClient:
    """The wire work of our sync client and nothing else: pack, send, receive, unpack."""

    def __init__(self, context, port: int):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://127.0.0.1:{port}")
        self.pack = msgpack.Packer(use_bin_type=True).pack
        self.ids = 0

    def call(self, *request):
        self.ids += 1
        self.socket.send(self.pack((self.ids, *request)))
        return msgpack.unpackb(self.socket.recv(), raw=False)[2]

    def get(self, key):
        return self.call("get", key)

    def set(self, key, value):
        self.call("set", key, value)

    def mset(self, mapping: dict) -> None:
        """The echo peer has no batches: one call per pair (used only to preload)."""
        for key, value in mapping.items():
            self.set(key, value)

    def send(self, index: int, request: tuple) -> None:
        self.socket.send(self.pack((index, *request)))

    def recv(self) -> int:
        return msgpack.unpackb(self.socket.recv(), raw=False)[0]

    def close(self) -> None:
        self.socket.close(0)


def start_echo(stack: contextlib.ExitStack, context) -> tuple:
    """(client, process) of the echo peer in its own process, stopped by `stack`."""
    port = free_port_block(1)
    process = SPAWN.Process(target=echo_server, args=(port,), daemon=True, name="bench-echo")
    process.start()
    stack.callback(lambda: (process.terminate(), process.join()))
    client = EchoClient(context, port)
    stack.callback(client.close)
    client.socket.setsockopt(zmq.RCVTIMEO, int(SERVER_START_SECONDS * 1000))
    client.call("ping")
    client.socket.setsockopt(zmq.RCVTIMEO, -1)
    return client, process

