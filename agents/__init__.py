"""The prosumer process: ``python -m agents --scenario FILE --id S1``."""
