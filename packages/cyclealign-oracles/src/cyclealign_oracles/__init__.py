"""Black-box oracles for CycleAlign."""
