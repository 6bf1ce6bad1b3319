"""Tasks and their data: the `TaskSpec` and catalog (built-in offline and hub tasks, user YAML tasks), the
sources that yield raw rows, fetch/prepare into deterministic leakage-free splits, and the Great
Expectations validation that stops bad data before any training. Nothing here loads a model."""
