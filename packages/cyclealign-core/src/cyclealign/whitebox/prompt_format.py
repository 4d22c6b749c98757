"""How a prompt is laid out for the white-box model, and where its sampled answer ends (``whitebox.prompt_format``).

- ``chat_template``: the tokenizer's own chat template, assistant turn opened; the
  answer ends at EOS.
- ``hh``: HH-RLHF's raw turns, ``"\\n\\nHuman: …\\n\\nAssistant: …"``, ending with an open
  ``"\\n\\nAssistant:"``: the protocol PRO (and so the paper) used for base models such
  as LLaMA-7B.  A base model seldom stops by itself; it goes on to invent the next
  ``Human:`` turn, so the answer is cut at the first line that opens a ``Human:`` or
  ``Assistant:`` turn.
- ``alpaca``: Stanford Alpaca's instruction template (``### Instruction:`` /
  ``### Response:``); the answer is cut where a new ``###`` section starts.
- ``auto`` (the default): ``chat_template`` when the tokenizer has one, else ``hh``.

The cycle's sampler, the training step and evaluation all render and cut through
this module, so what is ranked, trained on and scored is the same text; a sampled
answer's token ids are cut with it (``cut_ids``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cyclealign.errors import WhiteboxError
from cyclealign.protocols import Prompt

FORMATS = ("auto", "chat_template", "hh", "alpaca")
ALPACA_PREAMBLE = (  # the template Alpaca-7B was fine-tuned with, kept verbatim so the model recognises it
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
_HH_NAMES = {"user": "Human", "assistant": "Assistant"}
_STOPS = {
    "hh": re.compile(r"(?:^|\n+)[ \t]*(?:Human|Assistant):"),
    "alpaca": re.compile(r"(?:^|\n+)[ \t]*###[ \t]*(?:Instruction|Input|Response)[ \t]*:"),
}
# Literal markers a generate() call may stop at early (the regexes above decide where the text is cut).
STOP_STRINGS = {"hh": ("\nHuman:", "\nAssistant:"), "alpaca": ("### Instruction", "### Response", "### Input")}


def resolve_format(tokenizer: Any, fmt: str = "auto") -> str:
    """The concrete format: ``auto`` becomes ``chat_template`` or ``hh``; a missing template is an error."""
    if fmt not in FORMATS:
        raise WhiteboxError(f"whitebox.prompt_format: {fmt!r} is not one of {', '.join(FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if fmt == "auto":
        return "chat_template" if has_template else "hh"
    if fmt == "chat_template" and not has_template:
        raise WhiteboxError(
            "whitebox.prompt_format=chat_template: the tokenizer has no chat template (use hh or alpaca)"
        )
    return fmt


def _hh(prompt: Prompt) -> str:
    parts = []
    for m in prompt.messages:
        if m.role == "system":
            parts.append(m.content)
        else:
            parts.append(f"\n\n{_HH_NAMES.get(m.role, m.role.title())}: {m.content}")
    return "".join(parts) + "\n\nAssistant:"


def _alpaca(prompt: Prompt) -> str:
    turns = [m for m in prompt.messages if m.role != "system"]
    system = "\n".join(m.content for m in prompt.messages if m.role == "system")
    if len(turns) == 1:
        instruction = turns[0].content
    else:  # a dialogue: its turns, labelled, are the instruction to continue
        instruction = "\n".join(f"{_HH_NAMES.get(m.role, m.role.title())}: {m.content}" for m in turns)
    head = f"{ALPACA_PREAMBLE}\n\n" + (f"{system}\n\n" if system else "")
    return f"{head}### Instruction:\n{instruction}\n\n### Response:\n"


def render_prompt(tokenizer: Any, prompt: Prompt, fmt: str = "auto") -> str:
    """The prompt as text in the given format, the assistant's turn opened."""
    fmt = resolve_format(tokenizer, fmt)
    if fmt == "hh":
        return _hh(prompt)
    if fmt == "alpaca":
        return _alpaca(prompt)
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, prompt: Prompt, max_tokens: int, fmt: str = "auto") -> tuple[list[int], bool]:
    """Token ids of the rendered prompt, keeping the most recent ``max_tokens``; and whether it was cut.

    A chat template writes its own BOS; for the raw formats the tokenizer's BOS is put
    first when the tokenizer adds one to text (LLaMA's does), as the model saw in pre-training.
    """
    fmt = resolve_format(tokenizer, fmt)
    ids = list(tokenizer(render_prompt(tokenizer, prompt, fmt), add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if fmt != "chat_template" and bos is not None and getattr(tokenizer, "add_bos_token", False):
        if len(ids) + 1 > max_tokens:
            return [bos, *ids[-(max_tokens - 1) :]] if max_tokens > 1 else ids[-1:], True
        return [bos, *ids], False
    if len(ids) > max_tokens:
        return ids[-max_tokens:], True
    return ids, False


def cut_text(text: str, fmt: str) -> str:
    """``text`` up to the first turn or section the model began itself (``fmt`` resolved); unchanged if none."""
    stop = _STOPS.get(fmt)
    match = stop.search(text) if stop else None
    return text if match is None else text[: match.start()]


def cut_ids(tokenizer: Any, ids: Sequence[int], fmt: str) -> tuple[list[int], bool]:
    """The longest prefix of a sampled answer's ids that ends before its first invented turn; whether it was cut.

    The kept ids decode (stripped of trailing space) to a prefix of the cut text, so
    what is trained on is exactly what was ranked; a token that straddles the cut
    goes with the rest.
    """
    ids = list(ids)
    raw = tokenizer.decode(ids, skip_special_tokens=True)
    target = cut_text(raw, fmt)
    if target == raw:
        return ids, False
    target = target.rstrip()
    for k in range(len(ids), -1, -1):
        if target.startswith(tokenizer.decode(ids[:k], skip_special_tokens=True).rstrip()):
            return ids[:k], True
    return [], True  # unreachable: the empty prefix always qualifies
