"""Where trained prompts go: MLflow tracking runs and the model registry (`ptune-<task>`, aliases), the
promotion rule, the pyfunc behind every version, loading a prompt with its base model from a directory
or a model URI, and PEFT export/import."""
