"""A group of client processes that start their load together: each is spawned, gets
ready (interpreter, imports, connect) and waits at a barrier that this process passes
too, so that what it reads at that moment (the server's CPU) marks the start of the load.
It must not know what the clients do: the scripts give the target.
"""

from __future__ import annotations

import signal

from harness.servers import SERVER_START_SECONDS, SPAWN


def _client_main(target, *args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it; Ctrl-C must not
    target(*args)


class ClientGroup:
    """`count` processes named `name`-i, each running target(*arguments(i), barrier,
    results): it waits at `barrier` before its load and puts its result on `results`."""

    def __init__(self, target, count: int, name: str, arguments):
        self.barrier = SPAWN.Barrier(count + 1)
        self.results = SPAWN.Queue()
        self.processes = [SPAWN.Process(target=_client_main, daemon=True, name=f"{name}-{i}",
                                        args=(target, *arguments(i), self.barrier, self.results))
                          for i in range(count)]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def release(self) -> None:
        """Wait until every client is ready, and let them all go; not forever, should a
        client die on the way."""
        self.barrier.wait(SERVER_START_SECONDS)

    def collect(self, timeout: float) -> list:
        """Each client's result, in the order they come."""
        return [self.results.get(timeout=timeout) for _ in self.processes]

    def join(self) -> None:
        for process in self.processes:
            process.join()

    def stop(self) -> None:
        """Terminate the clients still running (all of them, if the load never began)."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join()
