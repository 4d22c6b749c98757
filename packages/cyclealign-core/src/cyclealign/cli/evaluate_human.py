"""`cyclealign eval human export|import`: the paper's Table 3 from human annotators (thin wrappers over ``human``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import console, guarded

human_app = typer.Typer(
    help="Human evaluation (Table 3): export a blind side-by-side sheet, import the filled sheets as win/tie/lose.",
    no_args_is_help=True,
)


@human_app.command("export")
def export_command(
    answers_a: Annotated[Path, typer.Argument(help="answers.jsonl of the first system (from `eval generate`).")],
    answers_b: Annotated[Path, typer.Argument(help="answers.jsonl of the second system, same prompts.")],
    name_a: Annotated[str, typer.Option(help="First system's name (in the key and the table only).")] = "A",
    name_b: Annotated[str, typer.Option(help="Second system's name.")] = "B",
    seed: Annotated[int, typer.Option(help="Seed of the item order and of which side each system is shown on.")] = 0,
    per_subset: Annotated[
        int | None, typer.Option(help="Sample this many items per subset (default: every shared prompt).")
    ] = None,
    title: Annotated[str, typer.Option(help="The page's heading.")] = "Which answer is better?",
    out: Annotated[Path, typer.Option(help="Folder for sheet.csv, sheet.html and key.json.")] = Path("eval/human"),
) -> None:
    """Write a blind side-by-side sheet of two systems' answers to the same prompts (Table 3).

    sheet.html: opens offline, A / B / tie per item, buttons that download the filled sheet (JSON or CSV).

    sheet.csv: the same for a spreadsheet (fill `choice` with A, B or tie); key.json: keep it from the annotators.

    Example:

      cyclealign eval human export a/answers.jsonl b/answers.jsonl --name-a CycleAlign --name-b PRO --per-subset 25
    """
    from cyclealign.evaluate.human import export_sheet

    paths = guarded(
        export_sheet,
        answers_a=answers_a,
        answers_b=answers_b,
        name_a=name_a,
        name_b=name_b,
        seed=seed,
        per_subset=per_subset,
        out_dir=out,
        title=title,
    )
    console.print(
        f"sheet for annotators: {paths['html']} (or {paths['csv']}); keep {paths['key']} to import", highlight=False
    )


@human_app.command("import")
def import_command(
    filled: Annotated[
        list[Path], typer.Argument(help="Filled sheets: the page's JSON/CSV download or sheet.csv (one per annotator).")
    ],
    key: Annotated[Path, typer.Option(help="key.json written by `eval human export`.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the key's folder).")] = None,
) -> None:
    """Map filled sheets' choices back to the systems: table3_human.{csv,md}, win / tie / lose per subset.

    Example:

      cyclealign eval human import ~/Downloads/filled-*.json --key eval/human/key.json
    """
    from cyclealign.evaluate.human import import_sheets

    guarded(import_sheets, filled=filled, key=key, out_dir=out)
