"""The five seams of the cycle, and the small immutable records that flow between them.

Everything with a side effect (HTTP, disk, accelerator) sits behind one of these
protocols so the engine can be tested in milliseconds with fakes while the
integration tests plug in the real parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cyclealign.errors import FATAL_KINDS
from cyclealign.errors import BudgetExceeded as BudgetExceeded  # raised by oracles, caught by the engine
from cyclealign.usage import Costs, OracleStats, Usage


@dataclass(frozen=True)
class Message:
    """One chat turn; ``role`` is ``"user"`` or ``"assistant"`` (or ``"system"``)."""

    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """A training prompt: a dialogue whose last turn is the user's, to be answered."""

    id: str
    messages: tuple[Message, ...]

    @classmethod
    def from_text(cls, id: str, text: str) -> Prompt:
        return cls(id=id, messages=(Message("user", text),))

    @property
    def text(self) -> str:
        """The dialogue as plain text, the way the oracle is shown it."""
        if len(self.messages) == 1:
            return self.messages[0].content
        names = {"user": "Human", "assistant": "Assistant", "system": "System"}
        return "\n".join(f"{names.get(m.role, m.role)}: {m.content}" for m in self.messages)


@dataclass(frozen=True)
class Candidate:
    """One response to a prompt, with the white-box model's log-probability of it.

    ``sum_logp`` is the sum of the response tokens' log-probs under the model at
    sampling time (temperature 1, i.e. the model's own confidence); it is computed
    once and reused for self-ranking.  Oracle-written candidates have no score.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    sum_logp: float | None = None
    source: str = "whitebox"

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logp(self) -> float:
        if self.sum_logp is None or not self.token_ids:
            return float("-inf")
        return self.sum_logp / len(self.token_ids)


@dataclass(frozen=True)
class Ranking:
    """A ranking of candidates: ``order`` lists candidate indices, best first."""

    order: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"ranking {list(self.order)} is not a permutation of 0..{len(self.order) - 1}")


@dataclass(frozen=True)
class Demonstration:
    """An in-context example for the oracle: a prompt, responses, and their order (best first)."""

    prompt: str
    responses: tuple[str, ...]
    order: tuple[int, ...]
    source: str = "dynamic"  # "static" or "dynamic"


@dataclass(frozen=True)
class OracleRequest:
    """What the oracle is asked: rank ``responses`` (in the order shown) and write a better one."""

    prompt: str
    responses: tuple[str, ...]
    demonstrations: tuple[Demonstration, ...] = ()


@dataclass(frozen=True)
class OracleVerdict(Costs):
    """The oracle's answer, already validated.

    ``order`` indexes ``OracleRequest.responses`` as shown, best first; it is
    ``None`` when no valid answer could be had, and ``error`` then says why and
    ``failure`` names the kind (``cyclealign.errors.FAILURE_KINDS``; a fatal kind stops the run).
    A failed verdict is recorded, never replaced by an invented ranking.
    ``usage`` is what the answer took, over all its attempts (a cache replay is free).
    """

    order: tuple[int, ...] | None
    response: str | None
    raw: str | None = None
    error: str | None = None
    attempts: int = 1
    cached: bool = False
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    waited_s: float = 0.0
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.order is not None

    @property
    def fatal(self) -> bool:
        """The oracle cannot go on (rejected key, unknown model, no quota): the run stops."""
        return self.failure in FATAL_KINDS


@dataclass(frozen=True)
class LossBatch:
    """Ranked candidates for one prompt, ready for one padded forward pass.

    ``candidates`` may come in any order; ``rewards[i]`` scores ``candidates[i]``
    (higher is better).  ``sft_index`` picks the SFT target (the best candidate).
    """

    prompt: Prompt
    candidates: tuple[Candidate, ...]
    rewards: tuple[float, ...]
    sft_index: int


@dataclass(frozen=True)
class LossOutput:
    """A differentiable total plus named float parts for logging."""

    total: Any  # torch.Tensor (scalar)
    parts: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Sampler(Protocol):
    """Draws ``n`` responses to each prompt of a wave from the white-box model (one batched call).

    ``keys[b]`` names prompt b's random stream: its draws must not depend on
    which other prompts share the call (resume and data parallelism rely on it).
    """

    def sample_many(self, prompts: Sequence[Prompt], n: int, keys: Sequence[str]) -> list[list[Candidate]]: ...


@runtime_checkable
class Chat(Protocol):
    """Free-form chats with an oracle's robustness (what the LLM judge needs): ``(text, error)`` each.

    A reply cut off at ``max_tokens`` comes with its text and an error starting with ``"truncated"``.
    """

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], response_format: dict[str, Any] | None = None
    ) -> list[tuple[str | None, str | None]]: ...


TRUNCATED = "truncated"  # how a Chat error for a reply cut off at max_tokens begins


@runtime_checkable
class Oracle(Protocol):
    """The black-box ranker.  ``rank_many`` may overlap its calls; order is preserved.

    Most oracles are a chat backend behind ``cyclealign.oracle.ChatOracle``, which
    implements all of this; a plugin may also implement it whole (e.g. a ranker
    built on a local reward model).  ``stats`` is what it did and paid so far;
    ``preflight`` fails fast on an endpoint that cannot work.
    """

    name: str
    stats: OracleStats

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]: ...

    def preflight(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class SelfRanker(Protocol):
    """Ranks candidates by the white-box model's own judgement."""

    def rank(self, prompt: Prompt, candidates: Sequence[Candidate]) -> Ranking: ...


@runtime_checkable
class AgreementStrategy(Protocol):
    """Extracts the part two rankings agree on, as a sequence of candidate indices, best first."""

    def agree(self, oracle: Ranking, self_ranking: Ranking) -> tuple[int, ...]: ...


@runtime_checkable
class RankLoss(Protocol):
    """A ranking objective plus SFT: ``L_rank + λ·L_sft`` over one or more prompts' candidates.

    All tensors are ``[B, n]``: ``logps`` summed response log-probs (differentiable),
    ``lengths`` true token counts, ``rewards`` higher-is-better in any order,
    ``ref_logps`` the frozen reference's summed log-probs (only if ``needs_reference``).
    ``sft_weight`` is the λ in use (recorded in the run summary).
    """

    name: str
    needs_reference: bool
    sft_weight: float

    def __call__(self, logps: Any, lengths: Any, rewards: Any, ref_logps: Any | None = None) -> LossOutput: ...


@runtime_checkable
class Trainer(Protocol):
    """One optimisation step of ``L_rank + λ·L_sft`` over ranked candidates; returns loss parts."""

    def step(self, batches: Sequence[LossBatch]) -> dict[str, float]: ...
