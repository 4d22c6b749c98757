"""``python -m cyclealign``: what launchers start, e.g. ``deepspeed --num_gpus 8 --module cyclealign run …``."""

import os
import sys

from cyclealign.cli.main import main


def _take_local_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends ``--local_rank=N``; it belongs in the environment, not the command."""
    kept = []
    for arg in argv:
        if arg.startswith("--local_rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        else:
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.argv = _take_local_rank(sys.argv)
    main()
