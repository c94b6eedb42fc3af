"""``python -m privgrid.roles.market_operator``: what ``privgrid mo`` runs."""

from privgrid.roles.market_operator.process import main

main()
