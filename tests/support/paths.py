"""Where things are: the repository root and the shared data beside it (tests live at any depth)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
