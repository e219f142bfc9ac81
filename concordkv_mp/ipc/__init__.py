"""What crosses a process boundary: the operation table (operations.py), the wire
protocol's framing and validation (protocol.py), the stream transport (stream.py; the
partition's side in stream_server.py) and ZeroMQ socket settings (sockets.py). No actors
and no engines here."""
