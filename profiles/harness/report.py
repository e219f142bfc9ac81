"""What the scripts print: progress on stderr, tables as aligned text or Markdown, the
sections every report opens with, and the report itself with its JSON record. It must not
measure anything: it formats what the scripts measured.
"""

from __future__ import annotations

import json
import sys

TRUNCATED_NOTE = "* phase stopped by its time budget; figure over the ops done"


def log(msg: str) -> None:
    """Progress, on stderr: stdout is the report."""
    print(msg, file=sys.stderr, flush=True)


def render(headers: list, rows: list, markdown: bool, numeric: bool = True) -> str:
    """A table as Markdown or as aligned text; `numeric` right-aligns all but the first column."""
    cells = [[str(c) for c in row] for row in [headers] + rows]
    if markdown:
        rule = ["---"] + ["---:" if numeric else "---"] * (len(headers) - 1)
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(rule) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    fmt = lambda row: "  ".join(c.rjust(w) if numeric and i else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(row) for row in cells[1:]])


def ops_cell(phase: dict) -> str:
    """A timed phase's ops/s, marked '*' when its time budget cut it short (TRUNCATED_NOTE)."""
    return f"{phase['ops_per_sec']:,.0f}" + ("*" if phase["truncated"] else "")


def publish(run: dict, text: str, json_path: str | None) -> None:
    """Print the report; write the whole record to `json_path` if given."""
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(run, f, indent=2, default=str)


def heading(markdown: bool):
    """A function that makes a section title."""
    return (lambda title: f"### {title}") if markdown else (lambda title: f"\n== {title} ==")


def machine_lines(run: dict, markdown: bool) -> list:
    """The report's opening section: the machine and the revision under test."""
    m = run["machine"]
    return [heading(markdown)("Machine"),
            (f"{m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
             f"{m['ram_gib']} GiB RAM, {m['python']}, {m['os']}; data on {run['filesystem']}"),
            f"ConcordKV-MP revision: {run['revision']}"]


def load_lines(run: dict, names: list) -> list:
    """The range of the load average over the runs of the stores `names`, if any ran."""
    loads = [x for n in names for x in run["results"][n]["loadavg_1min"]]
    if not loads:
        return []
    return [(f"1-minute load average at the start and end of each store's runs: {min(loads):.2f} to {max(loads):.2f} "
             f"on {run['machine']['logical_cores']} cores (this benchmark alone accounts for about 1)")]
