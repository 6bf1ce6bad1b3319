"""The frozen base model and what rides on it: loading (built-in GGUF conversion, local dirs, hub ids),
the soft prompt and its initialisations, tokenisation and batching, generation, and the prompt artifact
on disk (safetensors + json). No training loop and no metrics here."""
