"""The operation table is the one list of operations: the docs, both clients, the
embedded Database and a partition's dispatch all follow it, and the protocol validates
requests by it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import msgpack
import pytest

from concordkv_mp.client.async_client import AsyncClient
from concordkv_mp.client.sync_client import Client
from concordkv_mp.database import Database
from concordkv_mp.errors import BadRequestError, BatchTooLargeError, UnknownOperationError
from concordkv_mp.ipc import protocol
from concordkv_mp.ipc.operations import CURSOR, OPERATIONS, markdown_table
from concordkv_mp.ipc.protocol import Limits

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
LIMITS = Limits(max_key_size=64, max_value_size=1024, max_batch_keys=10, scan_page_size=100)
UNPACK = protocol.unpacker_limits(LIMITS, 1 << 16)
METHODS = [op for op in OPERATIONS.values() if op.method is not None]


def test_docs_show_the_table_as_it_is():
    text = PROTOCOL_MD.read_text()
    documented = re.search(r"<!-- operations table: begin -->\n(.*)\n<!-- operations table: end -->", text, re.S)
    assert documented is not None, "docs/protocol.md lost its operations table markers"
    assert documented.group(1) == markdown_table(), "docs/protocol.md differs; paste in:\n" + markdown_table()


def _parameters(function) -> list:
    return [(p.name, p.default) for p in list(inspect.signature(function).parameters.values())[1:]]


@pytest.mark.parametrize("op", METHODS, ids=lambda op: op.name)
def test_both_clients_have_every_method_with_the_same_parameters(op):
    sync_method = inspect.getattr_static(Client, op.method)
    async_method = getattr(AsyncClient, op.method)
    if op.attribute:
        assert isinstance(sync_method, property)
        sync_method = sync_method.fget
    assert _parameters(sync_method) == _parameters(async_method)
    if op.spread == CURSOR:  # the scan: an async iterator, not a coroutine
        assert not inspect.iscoroutinefunction(async_method)
    else:
        assert inspect.iscoroutinefunction(async_method)
    if op.embedded:
        embedded = inspect.getattr_static(Database, op.method)
        embedded = embedded.fget if isinstance(embedded, property) else embedded
        assert _parameters(embedded) == _parameters(sync_method)
    if op.spread != CURSOR:
        assert [name for name, _ in _parameters(sync_method)] == [arg.name for arg in op.params]


def test_generated_methods_bind_like_python_calls():
    with pytest.raises(TypeError, match="value"):
        Client.set(object.__new__(Client), b"k")
    with pytest.raises(TypeError, match="unexpected"):
        Client.get(object.__new__(Client), b"k", nope=1)


@pytest.mark.parametrize("op", list(OPERATIONS.values()), ids=lambda op: op.name)
def test_every_request_is_validated_by_its_argument_kinds(op):
    request_id = 7
    wrong_count = msgpack.packb([request_id, op.name, *([b"x"] * (len(op.args) + 1))])
    with pytest.raises(BadRequestError) as raised:
        protocol.decode_request(wrong_count, UNPACK, LIMITS)
    assert raised.value.request_id == request_id
    for position, arg in enumerate(op.args):
        args = [_valid(other.kind) for other in op.args]
        args[position] = _invalid(arg.kind)
        with pytest.raises((BadRequestError, BatchTooLargeError)) as raised:
            protocol.decode_request(msgpack.packb([request_id, op.name, *args]), UNPACK, LIMITS)
        assert raised.value.request_id == request_id
    good = [_valid(arg.kind) for arg in op.args]
    assert protocol.decode_request(msgpack.packb([request_id, op.name, *good]), UNPACK, LIMITS) == (
        request_id, op.name, good)


def test_an_operation_outside_the_table_is_unknown():
    with pytest.raises(UnknownOperationError):
        protocol.decode_request(msgpack.packb([1, "no_such_op"]), UNPACK, LIMITS)


_VALID = {"key": b"k", "value": b"v", "keys": [b"a", b"b"], "pairs": [[b"a", b"1"]], "part": 0, "bound": None,
          "count": None, "int": 3, "signed": -5, "bool": True, "str": "lsm"}
_INVALID = {"key": "text", "value": 5, "keys": [b"k"] * 11, "pairs": [[b"a"]], "part": -1, "bound": 5,
            "count": -1, "int": -1, "signed": 1 << 63, "bool": 1, "str": b"lsm"}


def _valid(kind: str):
    return _VALID[kind]


def _invalid(kind: str):
    return _INVALID[kind]
