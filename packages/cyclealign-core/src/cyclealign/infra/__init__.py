"""The machinery under every layer: distributed start-up, lockstep across ranks, crash-safe files."""
