"""The three roles of a grid, each a node (protocol logic, no I/O) and a process around it.

- :mod:`.agent`: a prosumer (seller, buyer or both) — ``privgrid agent`` / ``python -m agents``;
- :mod:`.line_manager`: the Line Manager — ``privgrid lm`` / ``python -m line_manager``;
- :mod:`.market_operator`: the Market Operator — ``privgrid mo`` / ``python -m market_operator``.

The top-level folders ``agents/``, ``line_manager/`` and ``market_operator/`` of a checkout are
thin entry points into these packages (they are not installed).
"""
