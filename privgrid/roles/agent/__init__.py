"""A prosumer agent: its node (protocol logic) and its process (options, keys, the loop)."""
