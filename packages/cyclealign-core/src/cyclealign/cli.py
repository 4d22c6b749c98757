"""The `cyclealign` command line: each command is a thin wrapper over a Python function."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not reach for the network at import

import typer
from rich.table import Table

from cyclealign import plugins
from cyclealign.cli_common import GuardedGroup, console, guarded, start_or_resume
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
    from cyclealign.run import resume as resume_run
    from cyclealign.run import run

    result = start_or_resume("run", config=config, set_=set_, resume=resume, start=run, resume_fn=resume_run)
    if result.totals.stopped and not result.totals.stopped.startswith("budget"):
        raise typer.Exit(130)  # interrupted: the message printed by run() says how to resume


@app.command("plugins")
def plugins_command() -> None:
    """List every registered oracle and loss, with the distribution it came from."""
    table = Table(title="CycleAlign plugins")
    for col in ("kind", "name", "distribution", "description"):
        table.add_column(col)
    for item in plugins.get_registry().items():
        table.add_row(item.kind, item.name, item.distribution, item.description)
    console.print(table)


@app.command("config")
def config_command(
    config: Annotated[Path | None, typer.Argument(help="YAML config to resolve (defaults when omitted).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="section.key=value override.")] = None,
) -> None:
    """Print the fully resolved configuration (defaults + file + overrides) as YAML."""
    import yaml

    cfg = guarded(load_config, path=config, overrides=set_ or [])
    console.print(yaml.safe_dump(cfg.public_dict(), sort_keys=False), highlight=False)


from cyclealign.aligner.cli import aligner_app  # noqa: E402
from cyclealign.evaluate.cli import eval_app  # noqa: E402
from cyclealign.export import export_command  # noqa: E402
from cyclealign.offline.cli import train_command  # noqa: E402
from cyclealign.report_cli import report_command  # noqa: E402

app.add_typer(eval_app, name="eval")
app.add_typer(aligner_app, name="aligner")
app.command("report")(report_command)
app.command("train")(train_command)
app.command("export")(export_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
