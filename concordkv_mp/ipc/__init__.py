"""Wire protocol (protocol.py) and ZeroMQ socket settings (sockets.py); no actors here."""
