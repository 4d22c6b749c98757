"""The cycle itself: one step of sample → self-rank → oracle rank → agree → train, its state and its demonstrations."""
