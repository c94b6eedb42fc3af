"""Docker Compose: one container per participant, a whole grid from one command.

- :mod:`.document`: the compose document (services, volumes, secrets layout) for a scenario;
- :mod:`.emitter`: the deterministic YAML it is written as;
- :mod:`.command`: ``privgrid compose SCENARIO -o FILE`` (the host command);
- :mod:`.setup`: ``python -m privgrid.compose setup``, the in-container step that writes the
  run's secrets and broker configuration;
- :mod:`.supervisor`: ``python -m privgrid.compose exec``, which runs one participant's role
  in its container;
- :mod:`.common`: the names both sides of the container boundary agree on.

See docs/docker.md.
"""
