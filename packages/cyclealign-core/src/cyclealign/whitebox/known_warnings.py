"""Warnings that third-party packages raise from their own code on our normal paths, silenced one by one.

A user who runs the demo should see our output, not a library's note to its own
maintainers.  Where our call is the cause, the call is fixed instead; what is
left here comes from inside a library whatever we pass it.  Each entry is
matched by category and message, and only for the duration of the one call
that raises it (:func:`quiet_known_warnings`), so any other warning, from the
same package included, still reaches the console.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# (category, message regex, why it is ours to silence)
KNOWN: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`is_gradient_checkpointing` is deprecated",
        "peft's PeftModel.__init__ reads transformers' deprecated property on every model it wraps",
    ),
)


@contextmanager
def quiet_known_warnings() -> Iterator[None]:
    """Run the block with the warnings of :data:`KNOWN` ignored (and nothing else)."""
    with warnings.catch_warnings():
        for category, message, _why in KNOWN:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
