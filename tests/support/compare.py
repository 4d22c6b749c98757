"""Comparing two runs' records: equal structures, floats within a tolerance."""

from __future__ import annotations

from typing import Any

import pytest


def assert_close(a: Any, b: Any, where: str = "", abs_tol: float = 1e-6) -> None:
    """``a`` equals ``b`` key by key and item by item; floats within ``abs_tol``; ``where`` names a difference."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=abs_tol), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}", abs_tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{k}]", abs_tol)
    else:
        assert a == b, where
