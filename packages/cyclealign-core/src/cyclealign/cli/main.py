"""The `cyclealign` command line: each command is a thin wrapper over a Python function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cyclealign import plugins
from cyclealign.cli.common import GuardedGroup, console, guarded, start_or_resume
from cyclealign.config import load_config

app = typer.Typer(
    help=(
        "CycleAlign: align a white-box language model with a black-box LLM in a cycle.\n\n"
        "With no arguments, `cyclealign run` aligns the embedded SmolLM2-135M-Instruct against the same "
        "model served locally by llama.cpp, on the built-in prompt set."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=GuardedGroup,
)


@app.command("run")
def run_command(
    config: Annotated[
        Path | None, typer.Argument(help="YAML config with sections whitebox, oracle, cycle, loss, data, train, run.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override one key: section.key=value (repeatable), e.g. cycle.num_samples=4."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this directory from its last checkpoint."),
    ] = None,
) -> None:
    """Align a white-box model with a black-box oracle.

    Examples:

      cyclealign run                                  # embedded default, runs on a laptop CPU

      cyclealign run my.yaml --set oracle.name=chatgpt --set data.max_prompts=100

      cyclealign run --resume runs/default            # continue after a crash or Ctrl+C
    """
    from cyclealign.api.trainers import resume_run, run_config  # the command is a user of CycleAlignTrainer

    result = start_or_resume("run", config=config, set_=set_, resume=resume, start=run_config, resume_fn=resume_run)
    if result.totals.stopped and not result.totals.stopped.startswith("budget"):
        raise typer.Exit(130)  # interrupted: the message printed by run() says how to resume


@app.command("plugins")
def plugins_command(
    options: Annotated[
        str | None,
        typer.Option("--options", metavar="NAME", help="Show the options a registered oracle or loss takes."),
    ] = None,
) -> None:
    """List every registered oracle and loss, with the distribution it came from (or one plugin's options)."""
    if options is not None:
        _print_options(options)
        return
    table = Table(title="CycleAlign plugins")
    for col in ("kind", "name", "distribution", "description"):
        table.add_column(col)
    for item in plugins.get_registry().items():
        table.add_row(item.kind, item.name, item.distribution, item.description)
    console.print(table)


def _print_options(name: str) -> None:
    """One table per registered plugin of that name: its options under ``<kind>.options``."""
    from cyclealign.errors import PluginError
    from cyclealign.plugin_options import describe

    found = [item for item in plugins.get_registry().items() if item.name == name]
    if not found:
        known = ", ".join(sorted({i.name for i in plugins.get_registry().items()}))
        raise PluginError(f"--options: no oracle or loss named {name!r} is registered (registered: {known})")
    for item in found:
        rows = describe(item.options)
        table = Table(title=f"{item.kind} {item.name!r} ({item.distribution}): {item.kind}.options")
        for col in ("option", "type", "default", "description"):
            table.add_column(col)
        for row in rows:
            default = "(required)" if row.required else repr(row.default)
            table.add_row(escape(row.name), escape(row.type), escape(default), escape(row.description))
        if item.options is None:
            table.caption = f"no options declared: {item.kind}.options is passed to it unchecked"
        elif not rows:
            table.caption = "it takes no options"
        console.print(table)


@app.command("config")
def config_command(
    config: Annotated[Path | None, typer.Argument(help="YAML config to resolve (defaults when omitted).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="section.key=value override.")] = None,
) -> None:
    """Print the fully resolved configuration (defaults + file + overrides) as YAML."""
    import yaml

    cfg = guarded(load_config, path=config, overrides=set_ or [])
    plugins.check_options(cfg)
    console.print(yaml.safe_dump(cfg.public_dict(), sort_keys=False), highlight=False)


from cyclealign.cli.aligner import aligner_app  # noqa: E402
from cyclealign.cli.evaluate import eval_app  # noqa: E402
from cyclealign.cli.export import export_command  # noqa: E402
from cyclealign.cli.offline import train_command  # noqa: E402
from cyclealign.cli.report import report_command  # noqa: E402

app.add_typer(eval_app, name="eval")
app.add_typer(aligner_app, name="aligner")
app.command("report")(report_command)
app.command("train")(train_command)
app.command("export")(export_command)


def main() -> None:
    from cyclealign.oracle.secrets import redact_uncaught

    redact_uncaught()  # a bug's traceback is still shown, with keys and credentials scrubbed
    app()


if __name__ == "__main__":
    main()
