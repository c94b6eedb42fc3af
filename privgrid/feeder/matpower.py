"""The feeder as a MATPOWER case file (``grid.m``): what every interval's scenario points at.

Buses are numbered 1..n as in :class:`~privgrid.feeder.feeder.Feeder`; the external grid's bus
is the reference bus (type 3) with the one generator. Branches keep pandapower's orientation
(line from-bus, transformer HV side first), so positive DC flow runs from the first bus of a
line's name to the second. ``baseMVA`` is 1, reactances and resistances are per unit of it,
``rateA`` is the thermal rating in MVA (without ``rating_scale``: the scenario's
``line_limits`` carry the limits the market uses). No loads are written: injections come
from the agents of each interval.
"""

from __future__ import annotations

from pathlib import Path

from privgrid.feeder.feeder import Feeder


def case_text(feeder: Feeder, name: str = "grid") -> str:
    bus_rows = [
        f"\t{b.number}\t{3 if b.number == feeder.slack else 1}\t0\t0\t0\t0\t1\t1\t0\t"
        f"{b.vn_kv:g}\t1\t1.1\t0.9;"
        for b in feeder.buses
    ]
    branch_rows = [
        f"\t{br.from_bus}\t{br.to_bus}\t{br.r_pu!r}\t{br.x_pu!r}\t0\t{br.rating_kva / 1000:.6g}"
        "\t0\t0\t0\t0\t1\t-360\t360;"
        for br in feeder.branches
    ]
    return "\n".join(
        [
            f"function mpc = {name}",
            f"%{name.upper()}  SimBench grid {feeder.code}, converted by privgrid "
            "(privgrid/feeder/matpower.py).",
            "%   Buses 1..n; the external grid's bus is the reference; rateA in MVA.",
            "mpc.version = '2';",
            "mpc.baseMVA = 1;",
            "",
            "%% bus data",
            "%\tbus_i\ttype\tPd\tQd\tGs\tBs\tarea\tVm\tVa\tbaseKV\tzone\tVmax\tVmin",
            "mpc.bus = [",
            *bus_rows,
            "];",
            "",
            "%% generator data",
            "%\tbus\tPg\tQg\tQmax\tQmin\tVg\tmBase\tstatus\tPmax\tPmin",
            "mpc.gen = [",
            f"\t{feeder.slack}\t0\t0\t100\t-100\t1\t1\t1\t100\t0;",
            "];",
            "",
            "%% branch data",
            "%\tfbus\ttbus\tr\tx\tb\trateA\trateB\trateC\tratio\tangle\tstatus\tangmin\tangmax",
            "mpc.branch = [",
            *branch_rows,
            "];",
            "",
        ]
    )


def write_case(feeder: Feeder, path: Path) -> None:
    path.write_text(case_text(feeder, path.stem), encoding="utf-8")
