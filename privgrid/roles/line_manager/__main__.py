"""``python -m privgrid.roles.line_manager``: what ``privgrid lm`` runs."""

from privgrid.roles.line_manager.process import main

main()
