"""The live dashboard of a run: a web page of what a monitor may see, updated as it happens.

- :mod:`.state` — the pure model of a run as a monitor sees it (fed by the two sources below);
- :mod:`.files` — the run folder, read as it is written (never ``secrets/`` or ``state/``);
- :mod:`.watch` — the broker, through the dashboard's own read-only account (envelopes only);
- :mod:`.network` — the grid's drawing (feeder coordinates, or a deterministic layout);
- :mod:`.server` — the web server (aiohttp) with its server-sent event stream, and
  ``static/`` the page (uPlot bundled, nothing from a CDN);
- :mod:`.command` — ``privgrid dashboard RUN_DIR``; :mod:`.launch` — ``privgrid run
  --dashboard``.

See docs/dashboard.md.
"""
