"""The `warmrun` command line: server commands (`serve`, `dev`) and client commands."""

from __future__ import annotations

import typer

from warmrun.cli import server

app = typer.Typer(
    help="Serve a long-running Python pipeline over HTTP; its runs are Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(server.serve)
app.command()(server.dev)

__all__ = ["app"]
