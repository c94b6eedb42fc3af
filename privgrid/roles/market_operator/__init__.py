"""The Market Operator: its node (protocol logic) and its process (options, keys, the loop)."""
