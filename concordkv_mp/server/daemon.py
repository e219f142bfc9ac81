"""`concordkv serve` and `concordkv stop`: the supervisor run in the foreground or as a
daemon, under a pid file.

The pid file is `flock`ed for the server's life, so a second server on the same data
directory is refused (`LOCKED`). `-d` double-forks, detaches (setsid) and sends its
output to `log_file`; the shell's process returns once the supervisor reported its
children started and the front answers a ping, and reports a failure to start in one
line. `stop_server` SIGTERMs the process the pid file names and waits for it.

This module owns the process's outer life (pid file, detaching, the start-up line);
the supervisor (supervisor.py) owns the children.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time

import psutil
import zmq

from concordkv_mp.errors import DatabaseLockedError
from concordkv_mp.ipc import protocol
from concordkv_mp.server.supervisor import Supervisor



class _PidFile:
    """`<pid_file>` locked for the server's life: one server per data directory."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DatabaseLockedError(f"a server already runs on this data directory (pid file {path})") from None
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def remove(self) -> None:
        try:
            os.remove(self.path)
        finally:
            os.close(self._fd)


def serve(config, daemon: bool = False) -> int:
    """Run the server until SIGTERM/SIGINT; with `daemon`, detach and return once it answers."""
    if daemon:
        return _daemonize(config)
    os.makedirs(config.data_dir, exist_ok=True)
    pid_file = _PidFile(config.pid_file)
    try:
        supervisor = Supervisor(config)
        return supervisor.run(on_ready=lambda: _announce(config))
    finally:
        pid_file.remove()


def _announce(config) -> None:
    print(
        f"ConcordKV-MP serving on {config.endpoint} (data {os.path.abspath(config.data_dir)}, "
        f"{config.partitions} partitions, engine {config.engine}, fsync {config.fsync}).\n"
        f"  Python:  c = concordkv_mp.connect({config.endpoint!r})\n"
        f"  Shell:   concordkv cli {config.endpoint}\n"
        f"  Stop:    Ctrl-C, or `concordkv stop --data-dir {config.data_dir}`",
        flush=True,
    )


def _daemonize(config) -> int:
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        # Read until "ok" or EOF, not to EOF: the server's children inherit the pipe.
        status = b""
        with os.fdopen(read_end, "rb") as pipe:
            while not status.startswith(b"ok"):
                chunk = pipe.read1(4096)
                if not chunk:
                    break
                status += chunk
        if status.startswith(b"ok") and _answers(config.endpoint, 30.0):
            print(f"ConcordKV-MP daemon started (pid file {config.pid_file}, log {config.log_file})")
            return 0
        print(f"ConcordKV-MP daemon failed to start: {status.decode(errors='replace') or 'see ' + config.log_file}",
              file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    code = 1
    try:
        os.makedirs(config.data_dir, exist_ok=True)
        log = os.open(config.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        pid_file = _PidFile(config.pid_file)
        try:
            def ready():
                _announce(config)
                os.write(write_end, b"ok")
                os.close(write_end)

            code = Supervisor(config).run(on_ready=ready)
        finally:
            pid_file.remove()
    except BaseException as exc:  # reported to the waiting parent, then to the log
        try:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        except OSError:
            pass
        raise
    finally:
        os._exit(code)


def _answers(endpoint: str, timeout: float) -> bool:
    """Whether the front at `endpoint` answers a ping within `timeout`. Run by the
    daemon's first parent, which never forks again, so it may use ZeroMQ; it speaks
    the wire protocol itself rather than through a client."""
    deadline = time.monotonic() + timeout
    context = zmq.Context()
    try:
        while time.monotonic() < deadline:
            socket = context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            try:
                socket.connect(endpoint)
                socket.send(protocol.encode_request(1, "ping"))
                if socket.poll(1000) and protocol.decode_reply(socket.recv())[2] is None:
                    return True
            finally:
                socket.close(0)
            time.sleep(0.1)
        return False
    finally:
        context.term()


def stop_server(config, timeout: float = 15.0) -> bool:
    """SIGTERM the server whose pid file `config.pid_file` names; wait for it to exit."""
    try:
        with open(config.pid_file) as file:
            pid = int(file.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return False
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    process.terminate()
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        return False
    return True
