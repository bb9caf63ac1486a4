"""Training loops, run directories and checkpoints."""
