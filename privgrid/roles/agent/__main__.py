"""``python -m privgrid.roles.agent``: what ``privgrid agent`` runs."""

from privgrid.roles.agent.process import main

main()
