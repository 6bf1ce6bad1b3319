"""What the bench scripts share: the command line of a model-speed bench (integer knobs plus --tiny)."""

from __future__ import annotations

import argparse


def bench_args(description: str, **defaults: int) -> argparse.Namespace:
    """Parse `--<name> N` for every default given, and `--tiny` (the tiny test model instead of SmolLM2)."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model instead of SmolLM2-135M")
    return parser.parse_args()
