"""The `warmrun` command line: server commands (`serve`, `dev`) and client commands."""

from __future__ import annotations

import typer

from warmrun.cli import runs, server

app = typer.Typer(
    help="Serve a long-running Python pipeline over HTTP; its runs are Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(server.serve)
app.command()(server.dev)
app.command()(runs.invoke)
app.add_typer(runs.runs_app, name="runs")

__all__ = ["app"]
