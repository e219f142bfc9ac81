"""The engines' model-based property test (tests/database/test_model.py), run through the network
client against a live server with several partitions.

The same state machine drives a `Client` instead of an embedded database: every reply
must match a dict, scans must merge the partitions' pages in key order (forward,
reverse, prefix, limit), and a scan stays on its snapshot while writes, flushes and
compactions run. The server uses the smallest sizes, so LSM flushes and compactions
really go through the shared compaction pool. "Reopen" reconnects, alternating between
the smart client (straight to partitions) and routing through the front.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.support.engine_options import tiny_options
from tests.database.test_model import ModelMachine


def run_model_through(server, max_examples: int, steps: int) -> None:
    directness = itertools.cycle([True, False])

    class ServerModelMachine(ModelMachine):
        def __init__(self):
            super().__init__(None, None)
            # One server serves every example: start each from an empty database.
            self.db.mdelete([key for key, _ in self.db.scan()])

        def open_db(self):
            return server.client(direct=next(directness))

        def teardown(self):
            self.db.close()

    run_state_machine_as_test(
        ServerModelMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_model_through_server(server_factory, engine):
    options = tiny_options(engine)
    del options["fsync"]
    server = server_factory(partitions=3, fsync="everysec", compaction_workers=2, **options)
    server.start()
    run_model_through(server, max_examples=25, steps=60)


def test_model_through_server_fsync_always(server_factory):
    options = tiny_options("lsm")
    del options["fsync"]
    server = server_factory(partitions=2, fsync="always", **options)
    server.start()
    run_model_through(server, max_examples=10, steps=40)
