"""`python -m cli ...`: the same as the `robustify` command (used to start child processes)."""

from cli.main import app

app(prog_name="robustify")
