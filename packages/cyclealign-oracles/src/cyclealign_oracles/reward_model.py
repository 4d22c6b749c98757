"""The ``reward-model`` oracle: a local reward model ranks the candidates; no chat, no cost, no answer of its own.

Each candidate is scored with its question by the scorer of ``cyclealign eval reward`` and
``eval oracle-accuracy`` (``cyclealign.evaluate.reward_model.RewardScorer``), the question rebuilt from the
text the oracle is shown exactly as ``eval oracle-accuracy`` rebuilds it from the journal, so a run
ranked by a reward model and that command's reference order are one and the same.  The order is by
score, highest first; equal scores keep the order shown.

It writes no answer, so ``cycle.include_oracle_response`` has nothing to add and the run trains on
the l samples alone.  Demonstrations are ignored: a reward model learns nothing in context.

Scores are kept one (question, answer) pair at a time in the oracle cache (``oracle.cache_path``; in
a run, the run directory's by default), keyed on the model directory's identity, so a rerun or a
resumed run scores only what is new.  The pairs of a batch of requests that miss the cache go
through the model together, ``oracle.options.batch_size`` at a time.  The run summary counts, for
this oracle, ``http_calls`` as forward passes and ``paid_calls`` as pairs scored (at $0).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import dialogue_text
from cyclealign.evaluate.reward_model import RewardScorer
from cyclealign.evaluate.run_accuracy import prompt_of
from cyclealign.oracle.cache import CachedAnswer, OracleCache, cache_key
from cyclealign.protocols import OracleRequest, OracleVerdict
from cyclealign.usage import OracleStats, Usage
from cyclealign_oracles.options import RewardModelOptions

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_identity(path: Path) -> str:
    """A digest of the directory's config and its weight files' names, sizes and times: a retrained model misses."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        stat = f.stat()
        digest.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def order_by_scores(scores: Sequence[float]) -> tuple[int, ...]:
    """Indices best first: the highest score first, equal scores in the order shown."""
    return tuple(sorted(range(len(scores)), key=lambda i: (-scores[i], i)))


class RewardModelOracle:
    """The ``Oracle`` protocol over a local reward model (see the module's docstring)."""

    def __init__(self, config: OracleConfig, options: RewardModelOptions) -> None:
        self.name = config.name
        self.options = options
        self.stats = OracleStats()
        self.scorer = RewardScorer(
            options.model,
            options.kind,
            batch_size=options.batch_size,
            device=options.device,
            dtype=options.dtype,
            max_length=options.max_length,
            keys=("oracle.options.model", "oracle.options.kind"),
        )
        self.model = f"reward-model:{options.kind}:{self.scorer.path.resolve()}"
        self._params = {
            "identity": model_identity(self.scorer.path),
            "kind": options.kind,
            "max_length": self.scorer.max_length,
            "dtype": str(next(self.scorer.model.parameters()).dtype),
        }
        self.cache = OracleCache(config.cache_path) if config.cache and config.cache_path else None

    def _key(self, question: str, answer: str) -> str:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return cache_key(self.model, messages, self._params)

    def _cached(self, key: str) -> float | None:
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        try:
            score = float(json.loads(hit.text)["score"])
        except (ValueError, KeyError, TypeError):
            return None  # not one of ours: score it again (and overwrite it)
        return score if math.isfinite(score) else None

    def _score_missing(self, pairs: dict[str, tuple[Any, str]], scores: dict[str, float]) -> int:
        """Score the pairs not yet in ``scores`` in batches, keep the finite ones; the forward passes made."""
        keys = list(pairs)
        passes = 0

        def count(_: int) -> None:
            nonlocal passes
            passes += 1

        fresh = self.scorer.score([pairs[k][0] for k in keys], [pairs[k][1] for k in keys], on_batch=count)
        for key, score in zip(keys, fresh, strict=True):
            scores[key] = score
            if self.cache is not None and math.isfinite(score):
                self.cache.put(key, self.model, CachedAnswer(json.dumps({"score": score}), Usage()))
        return passes

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        """Every request's candidates by score, the cache first, the misses of the whole batch scored together."""
        t0 = time.perf_counter()
        contexts = [prompt_of({"prompt": r.prompt}) for r in requests]
        keys = [[self._key(dialogue_text(c), a) for a in r.responses] for c, r in zip(contexts, requests, strict=True)]
        scores: dict[str, float] = {}
        missing: dict[str, tuple[Any, str]] = {}
        fresh_of: list[int] = []  # pairs each request brings to the model (a repeated pair counts once)
        for ctx, req, ks in zip(contexts, requests, keys, strict=True):
            before = len(missing)
            for key, answer in zip(ks, req.responses, strict=True):
                if key in scores or key in missing:
                    continue
                hit = self._cached(key)
                if hit is None:
                    missing[key] = (ctx, answer)
                else:
                    scores[key] = hit
            fresh_of.append(len(missing) - before)
        passes = self._score_missing(missing, scores) if missing else 0
        elapsed = time.perf_counter() - t0
        verdicts = [self._verdict([scores[k] for k in ks], n, elapsed) for ks, n in zip(keys, fresh_of, strict=True)]
        self.stats.calls += len(requests)
        self.stats.http_calls += passes
        self.stats.cache_hits += sum(v.cached for v in verdicts)
        self.stats.failures += sum(not v.ok for v in verdicts)
        self.stats.usage = self.stats.usage + Usage(calls=len(missing))
        return verdicts

    def _verdict(self, scores: list[float], fresh: int, elapsed: float) -> OracleVerdict:
        raw = json.dumps({"scores": scores})
        common: dict[str, Any] = {"raw": raw, "cached": fresh == 0, "usage": Usage(calls=fresh), "latency_s": elapsed}
        if not all(math.isfinite(s) for s in scores):
            error = "the reward model gave a score that is not a finite number"
            return OracleVerdict(order=None, response=None, error=error, failure="invalid_answer", **common)
        return OracleVerdict(order=order_by_scores(scores), response=None, **common)

    def rank(self, request: OracleRequest) -> OracleVerdict:
        return self.rank_many([request])[0]

    def preflight(self) -> None:
        """Nothing to check: the model was loaded (and refused if unusable) when the oracle was built."""

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={str(self.options.model)!r}, kind={self.options.kind!r})"


__all__ = ["RewardModelOracle", "model_identity", "order_by_scores"]
