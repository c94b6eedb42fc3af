"""A day on a real distribution feeder: SimBench grids and profiles → one market per interval.

Modules, one job each:

==============  ==========================================================================
``schema``      the day scenario file (``[day]``, ``[households]``, ``[grid_supply]``)
``feeder``      the converted feeder as pure data: buses, branches with ratings, elements
``simbench``    conversion from the ``simbench`` package, cached on disk (imports pandapower)
``household``   the household model: preferred point, bounds and cost of one interval (pure)
``agents``      who trades: households from the grid's loads, grid-supply agents, pairs
``intervals``   one interval's market as an ordinary scenario (explicit agents and pairs)
``matpower``    the feeder as a MATPOWER case file (``grid.m``)
``acflow``      the AC power-flow check of a cleared interval (pandapower, outside any role)
``ledger``      the day's ledger: keys and genesis once, one block per interval
``day``         the in-process day: every interval cleared, warm-started, recorded
``plots``       the day's figures
==============  ==========================================================================

Nothing here is imported by a role process: a participant reads the run folder's ``grid.m``
and its interval's ``scenario.toml`` like any other scenario. Only ``simbench`` and ``acflow``
import pandapower/simbench, and only inside their functions.
"""
