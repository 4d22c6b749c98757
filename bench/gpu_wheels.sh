#!/usr/bin/env bash
# The wheel folder bench/gpu.py needs on a GPU machine that has torch, transformers, peft, accelerate,
# pyarrow, rich, typer and pluggy but no package index: built here, copied there with the repository.
#
#   bash bench/gpu_wheels.sh [.whl]          # here (needs pip and PyPI; torch importable for DeepSpeed)
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   python3 bench/gpu.py                     # there
#
# What each wheel is for (what cyclealign-core imports at run time, checked with grep over packages/):
#   pydantic, pydantic-core, annotated-types, typing-inspection   cyclealign.config (always)
#   pyyaml                                                        cyclealign.config, store (always)
#   trl, datasets, dill, multiprocess, xxhash, pandas (+ python-dateutil, six)   the TRL rows of bench/gpu.py only
#   deepspeed, hjson, py-cpuinfo, msgpack, ninja, einops           train.backend=deepspeed only (not used by the bench)
# typer, rich, pluggy, safetensors, numpy, torch, transformers, peft come with the machine.
set -euo pipefail
py=${PYVER:-3.12}  # the GPU machine's Python
cd "$(dirname "$0")/.."  # the repository root; a relative folder is taken from here
mkdir -p "${1:-.whl}"
out=$(cd "${1:-.whl}" && pwd)

python3 -m pip wheel -q --no-deps -w "$out" packages/cyclealign-core packages/cyclealign-losses packages/cyclealign-oracles

binary=(--only-binary=:all: --python-version "$py" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$out")
# pydantic with its own pins (pydantic-core must match it exactly), then the rest without dependencies.
python3 -m pip download -q "${binary[@]}" pydantic
python3 -m pip download -q --no-deps "${binary[@]}" pyyaml "trl==1.16.*" "datasets>=3" dill multiprocess xxhash \
    pandas python-dateutil six hjson py-cpuinfo msgpack ninja einops
# DeepSpeed is an sdist: built here as a pure-Python wheel (its CUDA ops compile on first use there).
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$out" "deepspeed>=0.14"
rm -f "$out"/typing_extensions-*.whl  # the machine's torch brings its own
ls "$out"
