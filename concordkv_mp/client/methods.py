"""The public methods of both clients, built from the operation table.

For every operation with a `method` (ipc/operations.py), except the scan, whose cursors
and merge each client writes itself, `with_operations(flavour)` gives the client class
a method that:
- takes the operation's parameters by the table's names and defaults, positionally or
  by keyword, as any Python method does;
- checks them by kind with the client's `ArgumentChecker`, which the embedded
  `Database` shares, so both refuse the same input with the same error codes;
- routes the request: a KEY operation to the partition that owns the key, FRONT and ANY
  operations to the front, a PART operation spread over the partitions (`spread`) with
  the replies combined (`combine`).

The methods are written as source and compiled, as `dataclasses` writes `__init__`:
a closure taking `*args, **kwargs` would cost a get or a set 1.5 µs of binding and
checking (measured), 6 % of a round trip, and lose the real signature that keyword
calls, `help()` and tracebacks need. The source of each method is registered with
`linecache`, so a traceback shows its lines.

The two flavours differ only in how requests travel, which each client supplies:
`_call(channel, op, *args, timeout=None)` for one request and
`_call_many([(channel, (op, *args)), ...], timeout)` for many in flight at once — plain
methods in `Client`, coroutines in `AsyncClient`. Both keep `_partitions` (a channel per
partition), `_front`, `_partition_of`, `_checker` and `map` (routing.ServerMap).
This module must not touch sockets.
"""

from __future__ import annotations

import linecache

from concordkv_mp.client.routing import combine_stats, scatter
from concordkv_mp.ipc.operations import (
    BY_KEY,
    BY_PAIR,
    BY_UNIQUE_KEY,
    CURSOR,
    EACH,
    KEY,
    OPERATIONS,
    PART,
    SCATTER,
    STATS,
    SUM,
    Operation,
)

SYNC, ASYNC = "sync", "async"

# The client-side check of each argument kind a public method takes, as a line of
# source over the argument's name. Valid bytes, the common case, pass the inline test
# without a call. Kinds only the server can judge (an engine's name) go as they are.
_CHECKS = {
    "key": "if type({0}) is not bytes or not 0 < len({0}) <= checker.max_key: {0} = checker.key({0})",
    "value": "if type({0}) is not bytes or len({0}) > checker.max_value: {0} = checker.value({0})",
    "keys": "{0} = checker.keys({0})",
    "pairs": "{0} = checker.pairs({0})",
    "signed": "{0} = checker.signed({0}, {0!r})",
    "str": None,
}


def _each(client, name: str):
    partitions = client._partitions
    return [(partitions[p], (name, p)) for p in range(len(partitions))], range(len(partitions))


def _by_pair(client, name: str, pairs):
    partitions = client._partitions
    chunks = client.map.split_pairs(pairs)
    return [(partitions[p], (name, p, chunk)) for p, chunk in chunks], chunks


def _by_key(client, name: str, keys):
    partitions = client._partitions
    chunks = client.map.split_keys(keys)
    return [(partitions[p], (name, p, chunk)) for p, _, chunk in chunks], (chunks, len(keys))


def _by_unique_key(client, name: str, keys):
    return _by_key(client, name, list(dict.fromkeys(keys)))


# spread -> (client, op name, *arguments) -> (calls, what `combine` needs besides the replies)
_SPREADS = {EACH: _each, BY_PAIR: _by_pair, BY_KEY: _by_key, BY_UNIQUE_KEY: _by_unique_key}
_COMBINES = {
    SCATTER: lambda replies, chunks_and_count: scatter(chunks_and_count[0], replies, chunks_and_count[1]),
    SUM: lambda replies, _: sum(replies),
    STATS: lambda replies, _: combine_stats(replies),
    None: lambda replies, _: None,
}


def _source(op: Operation, flavour: str) -> str:
    """The method's source: checks, then one request or a spread of them."""
    names = [arg.name for arg in op.params]
    parameters = ", ".join(["self"] + [f"{arg.name}={arg.name}_default" if arg.has_default else arg.name for arg in op.params])
    arguments = "".join(f", {name}" for name in names)
    prefix, wait = ("async ", "await ") if flavour == ASYNC else ("", "")
    checks = ["    " + _CHECKS[arg.kind].format(arg.name) for arg in op.params if _CHECKS[arg.kind]]
    lines = [f"{prefix}def {op.method}({parameters}):"] + (["    checker = self._checker"] + checks if checks else [])
    if op.route == KEY:
        channel = f"self._partitions[self._partition_of({names[0]})]"
        lines.append(f"    return {wait}self._call({channel}, {op.name!r}{arguments}, timeout=timeout)")
    elif op.route != PART:
        lines.append(f"    return {wait}self._call(self._front, {op.name!r}{arguments}, timeout=timeout)")
    else:
        lines.append(f"    calls, chunks = spread(self, {op.name!r}{arguments})")
        lines.append(f"    return combine({wait}self._call_many(calls, timeout), chunks)")
    return "\n".join(lines) + "\n"


def _method(op: Operation, flavour: str):
    source = _source(op, flavour)
    filename = f"<concordkv_mp {flavour} client: {op.method}>"
    namespace = {
        "timeout": op.timeout,
        "spread": _SPREADS.get(op.spread),
        "combine": _COMBINES[op.combine],
        **{f"{arg.name}_default": arg.default for arg in op.params if arg.has_default},
    }
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own source, from the table
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    method = namespace[op.method]
    method.__doc__ = op.doc or f"The `{op.name}` operation (docs/protocol.md): {op.result}."
    return method


def with_operations(flavour: str):
    """Class decorator: give the client class the method of every operation that has
    one, but the scan."""

    def decorate(cls):
        for op in OPERATIONS.values():
            if op.method is None or op.spread == CURSOR:
                continue
            assert op.method not in vars(cls), f"{cls.__name__}.{op.method} comes from the operation table"
            assert op.route != PART or op.spread in _SPREADS, op.name
            method = _method(op, flavour)
            method.__module__, method.__qualname__ = cls.__module__, f"{cls.__qualname__}.{op.method}"
            setattr(cls, op.method, property(method, doc=method.__doc__) if op.attribute and flavour == SYNC else method)
        return cls

    return decorate
