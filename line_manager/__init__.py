"""The Line Manager process from a checkout: ``python -m line_manager --scenario FILE``.

The code is in :mod:`privgrid.roles.line_manager`; this folder is not installed."""
