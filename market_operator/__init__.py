"""The Market Operator process: ``python -m market_operator --scenario FILE``."""
