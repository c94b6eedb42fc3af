"""The MQTT broker: Mosquitto configuration, credentials and ACLs, and an embedded fallback.

- ``config``: password file, ACL and ``mosquitto.conf`` for a run
  (from ``mosquitto.conf.template``);
- ``local``: start Mosquitto on a free loopback port, or the embedded broker when Mosquitto is
  not installed;
- ``embedded``: a pure-Python broker (amqtt) with the same users and ACL rules.
"""
