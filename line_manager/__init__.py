"""The Line Manager process: ``python -m line_manager --scenario FILE``."""
