"""Plugin registration for the oracles."""
