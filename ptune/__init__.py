"""ptune: soft prompts (Lester et al. 2021) on frozen Hugging Face language models."""

__version__ = "0.1.0"
