"""Ranking losses for CycleAlign."""
