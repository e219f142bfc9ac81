"""The operation table: every operation of the wire protocol, declared once.

Everything else is derived from `OPERATIONS`: the protocol decodes and validates a
request by its argument kinds (ipc/protocol.py); the front routes it by its route; a
partition dispatches it to the `Database` method of the same name unless it has a
handler of its own (server/partition.py); both clients build their public methods from
`method`, `spread` and `combine` (client/methods.py); the reply of a write waits for
durability when `writes` is set; and docs/protocol.md's operation table is checked
against `markdown_table()` by a test. Adding an operation is adding an entry here plus
its `Database` method (and a partition handler only if it needs state of its own).

Pure data: this module must not import sockets, engines or clients.
"""

from __future__ import annotations

from dataclasses import dataclass

# How a request is routed. KEY: by the slot of its first argument (a key). PART: its
# first argument is a partition index. FRONT: answered by the front itself (a fan-out
# over the partitions). ANY: answered by whoever receives it.
KEY, PART, FRONT, ANY = "key", "part", "front", "any"

# Argument kinds, the wire shapes (docs/protocol.md): `key`/`value` bytes, `keys` a
# list of keys, `pairs` a list of [key, value], `part` a partition index, `bound` bytes
# or nil, `count` an int >= 0 or nil, `int` an int >= 0, `signed` a signed 64-bit int,
# `bool`, `str`.
ARG_KINDS = ("key", "value", "keys", "pairs", "part", "bound", "count", "int", "signed", "bool", "str")

# How a client spreads a PART operation over the partitions, and combines the replies.
BY_KEY = "by_key"  # keys grouped by owning partition, in chunks of max_batch_keys
BY_UNIQUE_KEY = "by_unique_key"  # the same, after dropping repeated keys
BY_PAIR = "by_pair"  # pairs grouped by the partition of their key, chunked by count and bytes
EACH = "each"  # one request to every partition
CURSOR = "cursor"  # a scan: a cursor per partition, pages merged (the clients' own code)
SCATTER, SUM, STATS = "scatter", "sum", "stats"  # values back in key order; a total; combine_stats

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Arg:
    """One argument: its name in the public methods, its wire kind, and its default."""

    name: str
    kind: str
    default: object = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class Operation:
    name: str  # on the wire
    route: str
    args: tuple[Arg, ...]  # on the wire, in order (a PART operation's first is the partition)
    result: str  # what the reply carries (documentation)
    # Appends to the WAL: under fsync="always" the reply waits until that is durable.
    writes: bool = False
    method: str | None = None  # the clients' public method; None: used inside the server only
    spread: str | None = None  # PART operations with a method: how the clients split it
    combine: str | None = None  # how the clients combine the per-partition replies (None: no result)
    attribute: bool = False  # the sync client exposes it as a property
    timeout: float | None = None  # the clients wait this long instead of their own timeout
    embedded: bool = True  # the embedded Database has the method too
    doc: str = ""  # the clients' method's docstring, where the result alone does not say it

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(arg.kind for arg in self.args)

    @property
    def params(self) -> tuple[Arg, ...]:
        """The public method's parameters: the wire arguments but the partition index."""
        return self.args[1:] if self.route == PART else self.args


# How long an engine switch may take: it copies a whole partition. The front waits this
# long for its partitions, and the clients for the front.
SWITCH_TIMEOUT = 3600.0

_PART = Arg("part", "part")
_KEY = Arg("key", "key")
_VALUE = Arg("value", "value")
_KEYS = Arg("keys", "keys")
_CURSOR_ID = Arg("cursor", "int")
_PAGE = Arg("page", "count")
_ENGINE_NAME = Arg("name", "str")


def _table(*operations: Operation) -> dict[str, Operation]:
    table = {}
    for op in operations:
        assert op.name not in table, op.name
        assert all(arg.kind in ARG_KINDS for arg in op.args), op.name
        assert (op.route == KEY) == (op.args[:1] == (_KEY,)), op.name
        assert (op.route == PART) == (op.args[:1] == (_PART,)), op.name
        assert op.spread is None or op.route == PART, op.name
        table[op.name] = op
    return table


OPERATIONS: dict[str, Operation] = _table(
    Operation("hello", ANY, (Arg("version", "int"),), "map (above)"),
    Operation("ping", ANY, (), '`"pong"`', method="ping", embedded=False),
    Operation("get", KEY, (_KEY,), "bin or nil", method="get"),
    Operation("set", KEY, (_KEY, _VALUE), "nil", writes=True, method="set"),
    Operation("delete", KEY, (_KEY,), "bool: it existed", writes=True, method="delete"),
    Operation("exists", KEY, (_KEY,), "bool", method="exists"),
    Operation("update", KEY, (_KEY, _VALUE), "bool: it existed (and was set)", writes=True, method="update"),
    Operation("incr", KEY, (_KEY, Arg("by", "signed", 1)), "int: the new value", writes=True, method="incr",
              doc="Add `by` to the decimal integer at `key` atomically and return the result; a missing key "
                  "counts from 0 (NOT_AN_INTEGER if the value is not one)."),
    Operation("mget", PART, (_PART, _KEYS), "[bin or nil, ...], in request order",
              method="mget", spread=BY_KEY, combine=SCATTER),
    Operation("mset", PART, (_PART, Arg("mapping_or_pairs", "pairs")),
              "nil. Atomic within the partition; the last pair of a key wins",
              writes=True, method="mset", spread=BY_PAIR,
              doc="Set many keys; atomic within each partition (not across partitions)."),
    Operation("mdelete", PART, (_PART, _KEYS), "int: how many existed (atomic)",
              writes=True, method="mdelete", spread=BY_UNIQUE_KEY, combine=SUM),
    Operation("scan", PART, (_PART, Arg("start", "bound"), Arg("end", "bound"), Arg("reverse", "bool"), _PAGE),
              "[cursor or nil, [[key, value], ...]]", method="scan", spread=CURSOR),
    Operation("scan_next", PART, (_PART, _CURSOR_ID, _PAGE), "[cursor or nil, [[key, value], ...]]"),
    Operation("scan_close", PART, (_PART, _CURSOR_ID), "nil"),
    Operation("count", PART, (_PART,), "int", method="count", spread=EACH, combine=SUM),
    Operation("stats", PART, (_PART,), "map: the engine's `stats()`", method="stats", spread=EACH, combine=STATS),
    Operation("flush", PART, (_PART,), "nil", method="flush", spread=EACH),
    Operation("compact", PART, (_PART,), "nil", method="compact", spread=EACH),
    Operation("partition_status", PART, (_PART,),
              "map: index, slots, endpoint, engine, keys, memtable_bytes, files_per_level, pending_compactions, "
              "open_cursors"),
    Operation("switch_engine", PART, (_PART, _ENGINE_NAME), "nil (copies the partition's data into the new engine)"),
    Operation("status", FRONT, (), "map: server, processes, partitions, io_optimizer (see the README)",
              method="status", embedded=False),
    Operation("engine", FRONT, (), "str: the engine of the partitions (comma-joined if they differ)",
              method="engine", attribute=True, doc="The name of the engine the partitions use."),
    Operation("set_engine", FRONT, (_ENGINE_NAME,), "nil: every partition switched",
              method="switch_engine", timeout=SWITCH_TIMEOUT,
              doc="Switch every partition to engine `name` (each one's data is copied)."),
)

WRITE_OPERATIONS = frozenset(op.name for op in OPERATIONS.values() if op.writes)

_ROUTE_NAMES = {KEY: "KEY", PART: "PART", FRONT: "FRONT", ANY: "ANY"}
_SELF_NAMED = ("key", "value", "keys", "pairs", "part")  # kinds that need no argument name in the docs


def markdown_table() -> str:
    """docs/protocol.md's table of operations, as this table defines them."""
    lines = ["| op | route | arguments | result | client method |", "|---|---|---|---|---|"]
    for op in OPERATIONS.values():
        arguments = ", ".join(arg.kind if arg.kind in _SELF_NAMED else f"{arg.name}:{arg.kind}" for arg in op.args)
        method = "—" if op.method is None else f"`{op.method}`" + (" (property)" if op.attribute else "")
        result = op.result + (" · **writes**" if op.writes else "")
        lines.append(f"| `{op.name}` | {_ROUTE_NAMES[op.route]} | {arguments or '—'} | {result} | {method} |")
    return "\n".join(lines)
