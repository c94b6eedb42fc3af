"""The Line Manager: its node (protocol logic) and its process (options, keys, the loop)."""
