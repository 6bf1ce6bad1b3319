"""Training one soft prompt: the optimisation loop with validation (it uses `ptune.evaluation`), early
stopping and best-prompt selection, atomic checkpoints with exact resume, and the training history and
curve it records."""
