"""``python -m broker``: the embedded broker, from a checkout (:mod:`privgrid.broker.embedded`)."""

from privgrid.broker.embedded import main

main()
