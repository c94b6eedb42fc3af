"""Everything between a role and the broker: topics, the signed envelope, message kinds and
their body schemas, the secure channel (sealing, signing, checks) and the MQTT session."""
