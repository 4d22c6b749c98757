"""The corrector's prompt: one template, stored beside the trained weights so inference uses it unchanged.

The template is a user turn holding the question and the answer to improve; the
tokenizer's chat template (``render_prompt``) wraps it, so training and
inference tokenise it identically.  The correction is the assistant's reply.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cyclealign.errors import ConfigError, SetupError
from cyclealign.protocols import Prompt

PROMPT_FILE = "corrector.json"  # in a corrector directory, beside config.json and the tokenizer
FORMAT = 1

DEFAULT_TEMPLATE = (
    "You revise answers written by another assistant. Read the question and the draft answer below, "
    "then write a better answer: correct what is wrong, add what is missing, and remove anything harmful "
    "or misleading. If the draft is already good, repeat it as it is.\n\n"
    "Question:\n{question}\n\n"
    "Draft answer:\n{answer}\n\n"
    "Write only the improved answer."
)


@dataclass(frozen=True)
class CorrectorPrompt:
    """The template (with ``{question}`` and ``{answer}``) and how many prompt tokens the corrector reads."""

    template: str = DEFAULT_TEMPLATE
    max_prompt_tokens: int = 1024

    def __post_init__(self) -> None:
        for field in ("{question}", "{answer}"):
            if field not in self.template:
                raise ConfigError(f"aligner.template: the corrector prompt must contain {field}")
        try:
            self.template.format(question="q", answer="a")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"aligner.template: only {{question}} and {{answer}} may appear in braces (double other braces): {e}"
            ) from None

    def text(self, question: str, answer: str) -> str:
        """The user turn the corrector sees."""
        return self.template.format(question=question, answer=answer)

    def prompt(self, question: str, answer: str, id: str = "correct") -> Prompt:
        """The same as a one-turn ``Prompt`` (what the trainer and ``render_prompt`` take)."""
        return Prompt.from_text(id, self.text(question, answer))

    def save(self, directory: Path) -> None:
        from cyclealign.infra.store import atomic_write_json

        atomic_write_json(Path(directory) / PROMPT_FILE, {"format": FORMAT, **asdict(self)})

    @classmethod
    def load(cls, directory: Path) -> CorrectorPrompt:
        path = Path(directory) / PROMPT_FILE
        if not path.is_file():
            raise SetupError(
                f"{directory}: not a corrector (no {PROMPT_FILE}); train one with `cyclealign aligner train`"
            )
        try:
            data = json.loads(path.read_text())
            return cls(template=str(data["template"]), max_prompt_tokens=int(data.get("max_prompt_tokens", 1024)))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise SetupError(f"{path}: unreadable corrector prompt ({e})") from None
