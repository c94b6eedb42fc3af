"""``python -m privgrid.dashboard RUN_DIR …``: what ``privgrid run --dashboard`` starts."""

from privgrid.dashboard.command import dashboard_command

if __name__ == "__main__":
    dashboard_command(prog_name="privgrid dashboard")
