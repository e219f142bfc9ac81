"""The CPU time of a server's processes over a run: a meter read before and after, turned
into microseconds per op in total and by process, and each process's share of one core.
It must not start or load the server.
"""

from __future__ import annotations

import psutil


class CpuMeter:
    """CPU seconds of a server's processes, by name ("front", "partition 0", ...)."""

    def __init__(self, processes: dict):
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}

    def read(self) -> dict:
        out = {}
        for name, process in self.processes.items():
            try:
                times = process.cpu_times()
                out[name] = times.user + times.system
            except psutil.Error:
                out[name] = 0.0
        return out


def measured(meter: CpuMeter, run) -> dict:
    """run() -> a summary, with the server's CPU over the run (see with_server_cpu)."""
    before = meter.read()
    result = run()
    return with_server_cpu(result, before, meter.read())


def metered(meter: CpuMeter, runs: dict) -> dict:
    """{workload: run} -> {workload: a function that runs it `measured`}."""
    return {workload: (lambda run=run: measured(meter, run)) for workload, run in runs.items()}


def with_server_cpu(result: dict, before: dict, after: dict) -> dict:
    """`result` with the server's CPU per op (total and by process) between the meter's
    readings `before` and `after`, and each process's share of one core over the run's
    wall time."""
    spent = {name: after[name] - before[name] for name in after}
    result["server_cpu_us_per_op"] = sum(spent.values()) / result["ops"] * 1e6
    result["server_cpu_by_process"] = {
        name: {"us_per_op": s / result["ops"] * 1e6, "core_percent": 100 * s / result["seconds"]}
        for name, s in spent.items()
    }
    return result

