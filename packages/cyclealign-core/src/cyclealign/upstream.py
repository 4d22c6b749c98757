"""Answers from any model: a local Hugging Face directory, any litellm model, or a Python callable.

One owner for "get an answer to each question" outside the cycle: zero-shot
evaluation rows (``cyclealign eval generate --model``) and the upstream model whose
answers a corrector rewrites (``cyclealign aligner correct``) both come through here.

A chat model goes through the oracle's own machinery (``plugins.create_oracle`` →
``ChatOracle.complete_many`` → ``Transport``), so it has the same retries with
backoff, concurrency limit, request pacing, SQLite answer cache and budget as the
oracle, configured by the same ``oracle`` section.  Nothing here knows litellm: the
chat backend is whatever plugin ``oracle.name`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cyclealign.config import OracleConfig
from cyclealign.errors import MissingPathError, SetupError, TransportError
from cyclealign.protocols import Prompt

Question = str | Prompt


@runtime_checkable
class Upstream(Protocol):
    """Anything that answers questions, one answer per question, in order."""

    name: str

    def answer_many(self, questions: Sequence[Question]) -> list[str]: ...

    def close(self) -> None: ...


def as_prompt(question: Question, index: int = 0) -> Prompt:
    return question if isinstance(question, Prompt) else Prompt.from_text(str(index), question)


class CallableUpstream:
    """Wraps ``fn(question_text) -> answer`` (or, with ``batched=True``, ``fn(list_of_texts) -> answers``)."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None, *, batched: bool = False) -> None:
        self.fn, self.batched = fn, batched
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def answer_many(self, questions: Sequence[Question]) -> list[str]:
        texts = [as_prompt(q, i).text for i, q in enumerate(questions)]
        answers = list(self.fn(texts)) if self.batched else [self.fn(t) for t in texts]
        if len(answers) != len(texts):
            raise ValueError(f"upstream {self.name!r} returned {len(answers)} answers for {len(texts)} questions")
        return [str(a) for a in answers]

    def close(self) -> None:
        return None


class LocalModelUpstream:
    """Greedy answers from a local model directory, or a run directory (its base model + trained weights)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        gguf_file: str | None = None,
        prompt_format: str | None = None,
    ) -> None:
        """``gguf_file``/``prompt_format``: as ``whitebox.*`` (``aligner bootstrap`` answers as it trains)."""
        from cyclealign.whitebox.greedy import load_system

        embedded = str(path).startswith("embedded:")  # the bundled SmolLM2, as `whitebox.model` names it
        path = Path(path)
        is_run = not embedded and (path / "config.yaml").is_file() and not (path / "config.json").is_file()
        self.name = str(path).split(":", 1)[1] if embedded else path.name
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.whitebox = load_system(
            run_dir=path if is_run else None,
            model=None if is_run else str(path),
            gguf_file=None if is_run else gguf_file,
            device=device,
            dtype=dtype,
            prompt_format=prompt_format,
        )

    def answer_many(self, questions: Sequence[Question]) -> list[str]:
        from cyclealign.whitebox.greedy import generate_answers

        prompts = [as_prompt(q, i) for i, q in enumerate(questions)]
        return generate_answers(self.whitebox, prompts, self.max_new_tokens, self.batch_size)

    def close(self) -> None:
        """Free the model's memory (the next model, a corrector or a reward model, needs the room)."""
        from cyclealign.whitebox.greedy import release_memory

        self.whitebox = None
        release_memory()


class ChatUpstream:
    """A chat model behind the oracle transport (retries, concurrency, pacing, cache, budget)."""

    def __init__(self, config: OracleConfig, name: str | None = None) -> None:
        from cyclealign.plugins import create_oracle
        from cyclealign.protocols import Chat

        if config.cache and config.cache_path is not None:
            Path(config.cache_path).parent.mkdir(parents=True, exist_ok=True)
        self.oracle = create_oracle(config)
        if not isinstance(self.oracle, Chat):
            self.oracle.close()
            raise SetupError(f"oracle.name={config.name!r} cannot chat, so it cannot answer questions")
        try:
            self.oracle.preflight()  # a rejected key or an unknown model fails before any question is sent
        except BaseException:
            self.oracle.close()
            raise
        self.name = name or (config.model or config.name).rsplit("/", 1)[-1]

    @property
    def stats(self) -> Any:
        return self.oracle.stats

    def answer_many(self, questions: Sequence[Question]) -> list[str]:
        """Every answer, or a ``TransportError`` naming the questions left unanswered.

        The answers that did come are already in the cache, so running again pays only for the rest.
        """
        chats = [
            [{"role": m.role, "content": m.content} for m in as_prompt(q, i).messages] for i, q in enumerate(questions)
        ]
        replies = self.oracle.complete_many(chats, None)
        failed = [(i, err) for i, (text, err) in enumerate(replies) if text is None]
        if failed:
            i, err = failed[0]
            raise TransportError(
                f"upstream {self.name!r}: {len(failed)} of {len(chats)} questions got no answer "
                f"(first: question {i + 1}: {err}); the answers that came are cached, run again to retry the rest"
            )
        return [text or "" for text, _ in replies]

    def close(self) -> None:
        self.oracle.close()


def chat_config(
    model: str, oracle: OracleConfig | None = None, *, api_base: str | None = None, max_new_tokens: int = 128
) -> OracleConfig:
    """The ``oracle`` section turned into an answering model: ``model`` and answer length set, free text.

    ``api_base`` (``--api-base``) becomes the first-party backends' option ``oracle.options.api_base``.
    Unless the section names a backend itself (``oracle.name``), a model behind an ``api_base``
    is reached as ``local`` (an OpenAI-compatible server, no key) and any other as ``litellm``.
    """
    oracle = oracle or OracleConfig()
    options = dict(oracle.options)
    if api_base is not None:
        options["api_base"] = api_base
    update: dict[str, Any] = {"model": model, "max_tokens": max(16, max_new_tokens), "options": options}
    if "name" not in oracle.model_fields_set:
        update["name"] = "local" if options.get("api_base") else "litellm"
        options["serve_gguf"] = None
    return oracle.model_copy(update=update)


def open_upstream(
    model: str | Path,
    *,
    oracle: OracleConfig | None = None,
    api_base: str | None = None,
    cache_path: Path | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str | None = None,
) -> Upstream:
    """A local model (a directory, or ``embedded:smollm2``) or a chat model (a litellm model string).

    ``cache_path`` is where a chat model's answers are kept unless ``oracle.cache_path`` says otherwise;
    ``device`` and ``dtype`` (None or ``auto``: the model's own) are a local model's.
    """
    path = Path(model)
    if path.is_dir() or str(model).startswith("embedded:"):
        device, dtype = (None if v == "auto" else v for v in (device, dtype))
        return LocalModelUpstream(
            path, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device, dtype=dtype
        )
    if path.exists() or str(model).startswith((".", "/", "~")):
        raise MissingPathError(f"--model: {model} is not a model directory (nor a litellm model string)")
    config = chat_config(str(model), oracle, api_base=api_base, max_new_tokens=max_new_tokens)
    if config.cache and config.cache_path is None and cache_path is not None:
        config = config.model_copy(update={"cache_path": Path(cache_path)})
    return ChatUpstream(config)


def answer_all(upstream: Upstream, questions: Sequence[Question], console: Any = None, chunk: int = 32) -> list[str]:
    """``upstream.answer_many`` in chunks, with a progress bar (off when ``console`` is None)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(f"[bold]answering with {upstream.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
    answers: list[str] = []
    with progress:
        task = progress.add_task("answer", total=len(questions))
        for start in range(0, len(questions), chunk):
            part = list(questions[start : start + chunk])
            answers += upstream.answer_many(part)
            progress.update(task, advance=len(part))
    return answers


def answer_and_close(
    upstream: Upstream, questions: Sequence[Question], console: Any = None
) -> tuple[list[str], str | None]:
    """Every answer (``answer_all``) and the usage line; the upstream is closed either way (frees a model's memory)."""
    try:
        return answer_all(upstream, questions, console), usage_line(upstream)
    finally:
        upstream.close()


def usage_line(upstream: Upstream) -> str | None:
    """``"12 calls, 3 from the cache, $0.0012"`` for a chat upstream; None for the others."""
    stats = getattr(upstream, "stats", None)
    if stats is None:
        return None
    line = f"{stats.http_calls} calls, {stats.cache_hits} from the cache"
    return line + (f", ${stats.cost_usd:.4f}" if stats.cost_usd else "")
