"""The Market Operator process from a checkout: ``python -m market_operator --scenario FILE``.

The code is in :mod:`privgrid.roles.market_operator`; this folder is not installed."""
