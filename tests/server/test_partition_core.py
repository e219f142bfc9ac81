"""`PartitionCore` driven without sockets: every operation a partition answers is
dispatched through the operation table to its Database, with the ownership checks, and
the results are those of a dict model."""

from __future__ import annotations

import msgpack
import pytest

import concordkv_mp
from concordkv_mp.errors import BadRequestError, CursorNotFoundError, WrongPartitionError
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.operations import FRONT, OPERATIONS
from concordkv_mp.ipc.protocol import Limits, SlotMap
from concordkv_mp.server.partition_core import PartitionCore

LIMITS = Limits(max_key_size=64, max_value_size=1024, max_batch_keys=100, scan_page_size=3)


def keys_of(partition: int, partitions: int, count: int) -> list[bytes]:
    slot_map = SlotMap(partitions)
    found = (b"key-%04d" % i for i in range(100_000))
    return sorted([key for key in found if slot_map.partition_of(key) == partition][:count])


@pytest.fixture
def core(tmp_path):
    db = concordkv_mp.open(str(tmp_path / "db"), engine="btree", fsync="none")
    yield PartitionCore(0, db, SlotMap(2), LIMITS, 1 << 16, "tcp://127.0.0.1:1", "server-id")
    db.close()


def test_every_operation_but_the_fronts_has_a_handler(core):
    for op in OPERATIONS.values():
        if op.route == FRONT:
            with pytest.raises(BadRequestError):
                core.handle(op.name, [])
        else:
            assert op.name in core._handlers


def test_operations_reach_the_database_as_a_model_says(core):
    mine = keys_of(0, 2, 8)
    model = {}
    for key in mine[:5]:
        assert core.handle("set", [key, b"v" + key]) is None
        model[key] = b"v" + key
    assert core.handle("get", [mine[0]]) == model[mine[0]]
    assert core.handle("exists", [mine[7]]) is False
    assert core.handle("update", [mine[7], b"x"]) is False
    assert core.handle("update", [mine[1], b"x"]) is True
    model[mine[1]] = b"x"
    assert core.handle("delete", [mine[2]]) is True
    del model[mine[2]]
    core.handle("mset", [0, [[mine[5], b"5"], [mine[6], b"6"]]])
    model.update({mine[5]: b"5", mine[6]: b"6"})
    assert core.handle("mget", [0, mine]) == [model.get(key) for key in mine]
    assert core.handle("mdelete", [0, [mine[5], mine[7]]]) == 1
    del model[mine[5]]
    assert core.handle("count", [0]) == len(model)
    assert core.handle("stats", [0])["count"] == len(model)
    core.handle("flush", [0])
    core.handle("compact", [0])
    cursor, page = core.handle("scan", [0, None, None, False, None])
    pairs = list(page)
    while cursor is not None:
        cursor, page = core.handle("scan_next", [0, cursor, None])
        pairs += page
    assert [tuple(pair) for pair in pairs] == sorted(model.items())
    cursor, _ = core.handle("scan", [0, None, None, True, 1])
    core.handle("scan_close", [0, cursor])
    with pytest.raises(CursorNotFoundError):
        core.handle("scan_next", [0, cursor, 1])
    assert core.handle("partition_status", [0])["keys"] == len(model)
    core.handle("switch_engine", [0, "lsm"])
    assert core.handle("hello", [protocol.PROTOCOL_VERSION])["engine"] == "lsm"
    assert core.handle("mget", [0, sorted(model)]) == [model[key] for key in sorted(model)]
    assert core.handle("ping", []) == "pong"


def test_answer_turns_request_bytes_into_reply_bytes_and_says_which_write(core):
    key = keys_of(0, 2, 1)[0]
    writes, request_id, reply = core.answer(msgpack.packb([7, "set", key, b"v"]))
    assert (writes, request_id, msgpack.unpackb(reply)) == (True, 7, [7, 0, None])
    writes, request_id, reply = core.answer(msgpack.packb([8, "get", key]))
    assert (writes, request_id, msgpack.unpackb(reply)) == (False, 8, [8, 0, b"v"])
    writes, request_id, reply = core.answer(msgpack.packb([9, "set", "not bytes", b"v"]))
    assert (writes, request_id) == (False, 9) and msgpack.unpackb(reply)[1:3] == [1, "BAD_REQUEST"]  # refused: nothing to wait for
    writes, request_id, reply = core.answer(b"\xc1 not msgpack")
    assert (writes, request_id) == (False, None) and msgpack.unpackb(reply)[:3] == [None, 1, "BAD_FRAME"]
    writes, request_id, reply = core.answer(msgpack.packb([10, "no_such_op"]))
    assert (writes, request_id) == (False, 10) and msgpack.unpackb(reply)[2] == "UNKNOWN_OP"


@pytest.mark.parametrize(
    "op, args",
    [
        ("get", lambda theirs: [theirs]),
        ("set", lambda theirs: [theirs, b"v"]),
        ("mget", lambda theirs: [0, [theirs]]),
        ("mset", lambda theirs: [0, [[theirs, b"v"]]]),
        ("mdelete", lambda theirs: [0, [theirs]]),
        ("count", lambda theirs: [1]),
        ("scan", lambda theirs: [1, None, None, False, None]),
    ],
)
def test_keys_and_indexes_of_another_partition_are_refused(core, op, args):
    theirs = keys_of(1, 2, 1)[0]
    with pytest.raises(WrongPartitionError):
        core.handle(op, args(theirs))
    assert core.handle("count", [0]) == 0
