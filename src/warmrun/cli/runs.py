"""`warmrun invoke` and `warmrun runs ...`: the client side of the command line.

Results go to stdout as JSON (pipe them to `jq`); progress bars, prompts and messages
go to stderr. The exit code says how the run ended: 0 succeeded, 1 failed (or the
deployment refused the request), 2 usage, 3 cancelled, 4 timed out, 130 interrupted.

What a run says of itself (its name, error, step names, pipeline name, ids) and what
a server answers is shown through `printable()` (or `json_text()` for JSON), never
raw: a pipeline, or a server, must not be able to send escape sequences to an
operator's terminal (retitle it, clear it, fake a prompt).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.markup import escape
from rich.progress import (
    BarColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.progress import Progress as ProgressDisplay
from rich.table import Table
from rich.text import Text

from warmrun.client import (
    AcceptedRun,
    DeploymentClient,
    Progress,
    Run,
    RunHandle,
    RunStatus,
    WarmrunError,
)

console = Console(stderr=True)

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMED_OUT = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    RunStatus.SUCCEEDED: EXIT_SUCCEEDED,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CANCELLED: EXIT_CANCELLED,
    RunStatus.TIMED_OUT: EXIT_TIMED_OUT,
}
STATUS_STYLES = {
    RunStatus.QUEUED: "dim",
    RunStatus.RUNNING: "cyan",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.TIMED_OUT: "red",
}


UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 control characters but newline and tab (ESC and CSI start escape
sequences, CR overwrites a line), DEL, and the bidi marks and overrides that reorder
what a terminal shows."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """Text from a run or a server, safe for the terminal and for rich markup: control
    characters shown as `\\x1b`-style escapes, markup brackets escaped."""
    return escape(UNPRINTABLE.sub(_escaped, str(text)))


def json_text(data: Any) -> str:
    """Indented JSON whose strings show no control character raw. `json.dumps` escapes
    C0 itself; DEL, C1 and bidi controls are escaped here (`\\u009b`): still the
    same JSON values, only spelled in ASCII."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return UNPRINTABLE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


runs_app = typer.Typer(
    help="List, read, cancel and follow the runs of a deployment.",
    no_args_is_help=True,
)
RUN_ID_SETTINGS = {"ignore_unknown_options": True}
"""Run ids are URL-safe base64 and may start with `-`: read such an id as the RUN_ID
argument rather than refuse it as an unknown option."""

UrlArg = Annotated[
    str | None,
    typer.Argument(
        metavar="URL",
        help="The deployment's base URL, e.g. http://127.0.0.1:8000 [WARMRUN_URL].",
        show_default=False,
    ),
]
RunIdArg = Annotated[
    str | None, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        envvar="WARMRUN_TOKEN",
        show_envvar=False,
        help="Bearer token of the deployment [WARMRUN_TOKEN].",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# --- invoke -------------------------------------------------------------------------


def invoke(
    url: UrlArg = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="KEY=VALUE",
            help="A parameter; VALUE is read as JSON when it parses (42, true, [1,2]), "
            "else as a string. Repeat for more.",
            show_default=False,
        ),
    ] = None,
    json_file: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="A JSON object of parameters ('-' reads stdin); -p values override it.",
            show_default=False,
        ),
    ] = None,
    async_: Annotated[
        bool, typer.Option("--async", help="Start the run and print its id at once.")
    ] = False,
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait",
            help="Follow the run with a live progress bar, then print its outputs. "
            "Default: on when stdout is a terminal and --async is not given.",
            show_default=False,
        ),
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="A human name for the run.", show_default=False)
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="The run's time budget in seconds; then it ends timed out.", show_default=False
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Retrying with the same key names the same run instead of starting another.",
            show_default=False,
        ),
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Run the deployment's pipeline: print its outputs as JSON once the run has ended.

    Ctrl-C while waiting asks whether to cancel the run or leave it running.
    """
    base, _ = url_and_run_id(url)
    parameters = parse_parameters(json_file, param or [])
    follow_run = wait if wait is not None else (not async_ and sys.stdout.isatty())
    with deployment_at(base, token) as deployment:
        handle = deployment.submit(
            parameters, run_name=run_name, timeout=timeout, idempotency_key=idempotency_key
        )
        if async_ and not follow_run:
            accepted = handle.accepted or AcceptedRun(run_id=handle.run_id)
            print_json(accepted.model_dump(mode="json", exclude_unset=True))
            return
        console.print(f"[dim]run[/dim] [bold]{printable(handle.run_id)}[/bold]", soft_wrap=True)
        try:
            run = follow(handle, console, progress=follow_run)
        except KeyboardInterrupt:
            interrupted(handle, ask_to_cancel=True)
        finish(run)


def parse_parameters(json_file: str | None, pairs: list[str]) -> dict[str, Any]:
    """The parameters object: `--json FILE` first, then each `-p key=value` over it."""
    parameters: dict[str, Any] = {}
    if json_file is not None:
        try:
            text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text()
            loaded = json.loads(text)
        except (OSError, ValueError) as err:
            raise typer.BadParameter(str(err), param_hint="--json") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must hold a JSON object", param_hint="--json")
        parameters.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="-p")
        parameters[key] = json_or_text(raw)
    return parameters


def json_or_text(raw: str) -> Any:
    """`-p n=3` means the number 3, `-p text=hello` the string: JSON when it parses."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


# --- runs ---------------------------------------------------------------------------


@runs_app.command("list")
def list_runs(
    url: UrlArg = None,
    status: Annotated[
        RunStatus | None, typer.Option(help="Only runs in this status.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many runs.")] = 20,
    as_json: JsonFlag = False,
    token: TokenOpt = None,
) -> None:
    """The deployment's runs, newest first."""
    base, _ = url_and_run_id(url)
    with deployment_at(base, token) as deployment:
        pages = deployment.runs(status, page_size=min(limit, 100))
        runs = list(itertools.islice(pages, limit))
    if as_json:
        print_json([run.model_dump(mode="json", exclude_unset=True) for run in runs])
        return
    table = Table("run_id", "name", "status", "progress", "created", "finished", box=None)
    for run in runs:
        style = STATUS_STYLES.get(run.status, "")
        table.add_row(
            printable(run.run_id),
            printable(run.run_name or ""),
            f"[{style}]{run.status}[/{style}]" if style else run.status,
            progress_text(run),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S") if run.created_at else "",
            run.finished_at.strftime("%H:%M:%S") if run.finished_at else "",
        )
    Console().print(table)


@runs_app.command("get", context_settings=RUN_ID_SETTINGS)
def get_run(url: UrlArg = None, run_id: RunIdArg = None, token: TokenOpt = None) -> None:
    """The run as the server knows it now, as JSON."""
    base, rid = url_and_run_id(url, run_id, needs_run=True)
    with deployment_at(base, token) as deployment:
        print_json(deployment.run(rid).status().model_dump(mode="json", exclude_unset=True))


@runs_app.command("cancel", context_settings=RUN_ID_SETTINGS)
def cancel_run(url: UrlArg = None, run_id: RunIdArg = None, token: TokenOpt = None) -> None:
    """Ask for the run's cancellation; it ends `cancelled` once its pipeline has stopped."""
    base, rid = url_and_run_id(url, run_id, needs_run=True)
    with deployment_at(base, token) as deployment:
        run = deployment.run(rid).cancel()
    if run.is_terminal:
        console.print(f"run {printable(rid)} had already ended: {run.status}", soft_wrap=True)
    else:
        console.print(f"cancellation of run {printable(rid)} requested", soft_wrap=True)
    print_json(run.model_dump(mode="json", exclude_unset=True))


@runs_app.command("watch", context_settings=RUN_ID_SETTINGS)
def watch_run(url: UrlArg = None, run_id: RunIdArg = None, token: TokenOpt = None) -> None:
    """Follow the run with a live progress bar; print its outputs once it has ended.

    Ctrl-C stops watching; the run goes on.
    """
    base, rid = url_and_run_id(url, run_id, needs_run=True)
    with deployment_at(base, token) as deployment:
        handle = deployment.run(rid)
        try:
            run = follow(handle, console)
        except KeyboardInterrupt:
            interrupted(handle, ask_to_cancel=False)
    finish(run)


# --- shared -------------------------------------------------------------------------


def url_and_run_id(
    url: str | None, run_id: str | None = None, *, needs_run: bool = False
) -> tuple[str, str]:
    """URL and RUN_ID, with WARMRUN_URL standing in for a URL that was left out: with
    it set, `warmrun runs get RUN_ID` means the run on that deployment."""
    from_env = os.environ.get("WARMRUN_URL") or None
    if needs_run and run_id is None and url is not None and from_env and not looks_like_url(url):
        url, run_id = from_env, url
    url = url or from_env
    if not url:
        raise typer.BadParameter("give the deployment's URL or set WARMRUN_URL", param_hint="URL")
    if needs_run and not run_id:
        raise typer.BadParameter("which run? give its id", param_hint="RUN_ID")
    return url, run_id or ""


def looks_like_url(text: str) -> bool:
    """Run ids are URL-safe base64 (letters, digits, `-`, `_`); URLs have `:`, `/`, `.`."""
    return any(char in text for char in ":/.")


@contextmanager
def deployment_at(url: str, token: str | None) -> Iterator[DeploymentClient]:
    """A client of the deployment, with any client error reported on stderr as exit
    code 1."""
    try:
        with DeploymentClient(url, token) as deployment:
            yield deployment
    except WarmrunError as err:
        console.print(f"[red]error:[/red] {printable(err)}", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None


def follow(
    handle: RunHandle, console: Console, *, progress: bool = True, poll: float | None = None
) -> Run:
    """Follow the run to its end, drawing a live progress bar of its steps on `console`."""
    if not progress:
        return handle.wait(poll=poll)
    columns = (
        SpinnerColumn(finished_text=" "),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[status]}"),
        RunTimeColumn(),
    )
    run: Run | None = None
    with ProgressDisplay(*columns, console=console) as bar:
        task = bar.add_task("", total=None, steps="", status="", started=None, finished=None)
        for run in handle.watch(poll=poll):
            bar.update(task, **bar_state(run))
    assert run is not None
    return run


def bar_state(run: Run) -> dict[str, Any]:
    """What the progress bar shows of a run: step, fraction, steps done and status."""
    progress = run.progress or Progress()
    fraction = progress.fraction
    if fraction is None and progress.steps_total:
        fraction = progress.steps_completed / progress.steps_total
    if run.status == RunStatus.SUCCEEDED:
        fraction = 1.0
    style = STATUS_STYLES.get(run.status, "")
    return {
        "description": printable(progress.step or run.pipeline_name),
        "total": None if fraction is None else 1.0,
        "completed": fraction or 0.0,
        "steps": steps_text(progress),
        "status": f"[{style}]{run.status.replace('_', ' ')}[/{style}]",
        "started": run.started_at,
        "finished": run.finished_at,
    }


class RunTimeColumn(ProgressColumn):
    """How long the run has been running: since it started on the server (not since
    this command did), ticking until it finishes."""

    def render(self, task: Task) -> Text:
        started: datetime | None = task.fields.get("started")
        if started is None:
            return Text("-:--:--", style="progress.elapsed")
        finished: datetime | None = task.fields.get("finished")
        seconds = ((finished or datetime.now(UTC)) - started).total_seconds()
        return Text(str(timedelta(seconds=max(int(seconds), 0))), style="progress.elapsed")


def steps_text(progress: Progress) -> str:
    if progress.steps_total:
        return f"{progress.steps_completed}/{progress.steps_total} steps"
    return f"{progress.steps_completed} steps" if progress.steps_completed else ""


def progress_text(run: Run) -> str:
    progress = run.progress
    if progress is None:
        return ""
    parts = [printable(progress.step)] if progress.step else []
    if steps := steps_text(progress):
        parts.append(steps)
    return " · ".join(parts)


def interrupted(handle: RunHandle, *, ask_to_cancel: bool) -> NoReturn:
    """Ctrl-C: the run lives on the server, so say which run it is and, for a run this
    command started, offer to cancel it (no answer, or a second Ctrl-C, leaves it)."""
    console.print()
    cancel = False
    run_id = printable(handle.run_id)
    if ask_to_cancel:
        try:
            cancel = typer.confirm(
                f"Cancel run {UNPRINTABLE.sub(_escaped, handle.run_id)}? (no: leave it running)",
                default=False,
                err=True,
            )
        except typer.Abort:
            console.print()
    if cancel:
        try:
            run = handle.cancel()
        except WarmrunError as err:
            console.print(f"[red]error:[/red] {printable(err)}", soft_wrap=True)
            console.print(f"run {run_id} may still be running", soft_wrap=True)
            raise typer.Exit(EXIT_FAILED) from None
        what = f"had already ended: {run.status}" if run.is_terminal else "cancellation requested"
        console.print(f"run {run_id} {what}", soft_wrap=True)
    else:
        console.print(
            f"run {run_id} left running; follow it with: "
            f"warmrun runs watch {printable(handle.client.url)} {run_id}",
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_INTERRUPTED)


def finish(run: Run) -> NoReturn:
    """Outputs on stdout for a run that succeeded; why not on stderr otherwise. The exit
    code tells which."""
    if run.status == RunStatus.SUCCEEDED:
        print_json(run.outputs or {})
    else:
        reason = f": {run.error.type}: {run.error.message}" if run.error else ""
        style = STATUS_STYLES.get(run.status, "red")
        console.print(
            f"[{style}]run {printable(run.run_id)} {run.status.replace('_', ' ')}[/{style}]"
            f"{printable(reason)}",
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_CODES.get(run.status, EXIT_FAILED))


def print_json(data: Any) -> None:
    """JSON on stdout: highlighted for a terminal, plain for a pipe; no control
    character raw in either (`print_json` would parse the text and write them back)."""
    text = json_text(data)
    if sys.stdout.isatty():
        Console(soft_wrap=True).print(JSONHighlighter()(Text(text)))
    else:
        typer.echo(text)
