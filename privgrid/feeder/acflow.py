"""The AC check of a cleared interval: pandapower's power flow, outside any participant.

The market clears on the DC model (flows follow from net injections through the PTDF; losses,
reactive power and voltages ignored). To say how far that is from physics, each interval's
cleared net injections are put into the SimBench grid — every household's net injection at
its bus (its SimBench loads' reactive power with it), the external grid as slack — and
pandapower's AC Newton–Raphson power flow is run. Reported per interval:

- ``max_flow_error_kw``: the largest ``|P_AC − F_DC|`` over branches (active power at the
  sending end, in the DC model's orientation);
- ``max_loading_pct``: the largest AC loading, ``max(|S_from|, |S_to|) / limit``, against the
  same (scaled) limits the market used;
- ``losses_kw``: the active losses of lines and transformers, which the DC model leaves to
  the slack;
- ``vm_min_pu`` and ``vm_max_pu``: the bus voltage range.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.feeder.feeder import Feeder


class ACCheck:
    """One pandapower net for the day; :meth:`run` per interval."""

    def __init__(self, net_path: Path, feeder: Feeder) -> None:
        logging.getLogger("pandapower").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pandapower as pp

            self._pp = pp
            net = pp.from_json(str(net_path))
        for table in (net.load, net.sgen, net.storage):
            table["in_service"] = False
        self.feeder = feeder
        self.net = net
        self.loads = {
            b.number: int(pp.create_load(net, bus=b.pp_index, p_mw=0.0, q_mvar=0.0))
            for b in feeder.buses
        }

    def run(
        self,
        injections: Mapping[int, tuple[float, float]],
        dc_flows: Sequence[float],
        limits: Sequence[float],
    ) -> dict[str, Any]:
        """AC figures for net injections ``bus → (p kW, q kvar)`` (positive = into the grid)
        against ``dc_flows`` and ``limits`` (kW, in the feeder's branch order)."""
        net = self.net
        for bus, row in self.loads.items():
            p, q = injections.get(bus, (0.0, 0.0))
            net.load.at[row, "p_mw"] = -p / 1000.0
            net.load.at[row, "q_mvar"] = -q / 1000.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._pp.runpp(net, numba=False)
        except Exception as exc:  # pandapower's LoadflowNotConverged and friends
            return {"converged": False, "error": str(exc).splitlines()[0] if str(exc) else ""}
        flow_error = loading = losses = 0.0
        for br, dc, limit in zip(self.feeder.branches, dc_flows, limits, strict=True):
            if br.kind == "line":
                res = net.res_line.loc[br.pp_index]
                p1, q1, p2, q2 = res.p_from_mw, res.q_from_mvar, res.p_to_mw, res.q_to_mvar
            else:
                res = net.res_trafo.loc[br.pp_index]
                p1, q1, p2, q2 = res.p_hv_mw, res.q_hv_mvar, res.p_lv_mw, res.q_lv_mvar
            losses += 1000.0 * float(res.pl_mw)
            flow_error = max(flow_error, abs(1000.0 * float(p1) - dc))
            apparent = 1000.0 * max(math.hypot(p1, q1), math.hypot(p2, q2))
            loading = max(loading, 100.0 * apparent / limit)
        vm = net.res_bus.vm_pu[net.bus.in_service]
        return {
            "converged": True,
            "max_flow_error_kw": flow_error,
            "max_loading_pct": loading,
            "losses_kw": losses,
            "vm_min_pu": float(vm.min()),
            "vm_max_pu": float(vm.max()),
        }
