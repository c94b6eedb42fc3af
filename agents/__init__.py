"""The prosumer process from a checkout: ``python -m agents --scenario FILE --id S1``.

The code is in :mod:`privgrid.roles.agent`; this folder is not installed."""
