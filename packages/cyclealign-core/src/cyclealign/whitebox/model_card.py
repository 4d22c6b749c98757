"""The README.md beside every saved adapter, model and corrector: hub metadata plus how it was made.

The card is built from what the run directory already holds (``config.yaml``, the
records, ``eval/*.csv``), so it says exactly what the run did: the base model, the
training prompts' source, the oracle (its model name only, never an endpoint or
key), the loss and its SFT weight λ, and the numbers the records add up to.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

CARD = "README.md"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_numbers(run_dir: Path) -> dict[str, Any]:
    """What the records add up to: interactions, full-agreement rate, oracle spend; or steps for training."""
    numbers: dict[str, Any] = {}
    interactions = _jsonl(run_dir / "interactions.jsonl")
    if interactions:
        oracle = [r.get("oracle") or {} for r in interactions]
        numbers["interactions"] = len(interactions)
        numbers["agreement_rate"] = round(sum(bool(r.get("agreed_fully")) for r in interactions) / len(interactions), 4)
        numbers["oracle_cost_usd"] = round(sum(float(o.get("cost_usd") or 0.0) for o in oracle), 6)
        numbers["oracle_tokens"] = sum(
            int(o.get("prompt_tokens") or 0) + int(o.get("completion_tokens") or 0) for o in oracle
        )
    steps = _jsonl(run_dir / "steps.jsonl")
    if steps:
        numbers["training_steps"] = len(steps)
    return numbers


def _eval_tables(run_dir: Path) -> list[str]:
    """Each ``eval/*.csv`` as a markdown table under its title (the ``.md`` beside it names it)."""
    lines: list[str] = []
    for path in sorted((run_dir / "eval").rglob("*.csv")) if (run_dir / "eval").is_dir() else []:
        with path.open(encoding="utf-8", newline="") as f:
            rows = [row for row in csv.reader(f) if row]
        if len(rows) < 2:
            continue
        title_file = path.with_suffix(".md")
        title = (
            title_file.read_text(encoding="utf-8").splitlines()[0].lstrip("# ") if title_file.exists() else path.stem
        )
        lines += ["", f"### {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return lines


def _data_source(config: dict[str, Any]) -> Any:
    """Where the training data came from, whichever command trained (cycle, ``train``, ``aligner train``)."""
    for section, key in (("data", "source"), ("offline", "source")):
        if found := (config.get(section) or {}).get(key):
            return found
    aligner = config.get("aligner") or {}
    return [*aligner.get("data", []), *aligner.get("runs", [])] or None


def _sft_weight(config: dict[str, Any]) -> Any:
    """λ as configured; ``auto`` resolved to (l−1)² when the number of samples l is known."""
    weight = (config.get("loss") or {}).get("sft_weight")
    samples = (config.get("cycle") or {}).get("num_samples")
    return float((samples - 1) ** 2) if weight == "auto" and isinstance(samples, int) else weight


def card_metadata(config: dict[str, Any], numbers: dict[str, Any], *, base_model: str, library: str) -> dict[str, Any]:
    """The YAML front matter: the hub's keys, then a ``cyclealign`` mapping with the run's facts."""
    loss = config.get("loss") or {}
    method = f"cyclealign-{loss['name']}" if loss.get("name") else "cyclealign-sft"
    facts = {
        "data_source": _data_source(config),
        "oracle": (config.get("oracle") or {}).get("model"),
        "loss": loss.get("name"),
        "sft_weight": _sft_weight(config),
        **numbers,
    }
    tags = ["cyclealign", method] + (["lora"] if library == "peft" else [])
    return {
        "base_model": base_model,
        "library_name": library,
        "tags": tags,
        "cyclealign": {k: v for k, v in facts.items() if v is not None},
    }


def _body(meta: dict[str, Any], kind: str, eval_lines: list[str]) -> list[str]:
    facts = meta["cyclealign"]
    lines = [
        f"# {kind} trained with CycleAlign",
        "",
        f"This {kind} was trained from `{meta['base_model']}` by CycleAlign, which teaches a white-box model",
        "from the rankings a black-box language model (the oracle) gives its own sampled answers.",
        "",
        "| what | value |",
        "|---|---|",
    ]
    names = {
        "data_source": "training prompts",
        "oracle": "oracle model",
        "loss": "ranking loss",
        "sft_weight": "SFT weight λ",
        "interactions": "interactions",
        "agreement_rate": "full agreement with the oracle",
        "oracle_cost_usd": "oracle cost (USD)",
        "oracle_tokens": "oracle tokens",
        "training_steps": "training steps",
    }
    lines += [f"| {label} | {facts[key]} |" for key, label in names.items() if key in facts]
    if eval_lines:
        lines += ["", "## Evaluation", *eval_lines]
    return [*lines, "", "Load it with `peft`/`transformers` as usual; the run directory holds the full records.", ""]


def write_model_card(
    target: Path, run_dir: Path | None = None, *, base_model: str | None = None, kind: str = "adapter"
) -> Path:
    """Write ``target/README.md`` (replacing the generic one ``save_pretrained`` may leave)."""
    target = Path(target)
    run_dir = Path(run_dir) if run_dir is not None else target.parent
    config = _read_yaml(run_dir / "config.yaml")
    adapter = _read_yaml(target / "adapter_config.json")  # JSON is YAML
    library = "peft" if adapter else "transformers"
    base = base_model or adapter.get("base_model_name_or_path") or (config.get("whitebox") or {}).get("model")
    meta = card_metadata(config, run_numbers(run_dir), base_model=str(base or "unknown"), library=library)
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
    text += "\n".join(_body(meta, kind, _eval_tables(run_dir)))
    path = target / CARD
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["CARD", "card_metadata", "run_numbers", "write_model_card"]
