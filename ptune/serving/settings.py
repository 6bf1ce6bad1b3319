"""Settings of one `ptune serve` process, given as command-line options (`ptune serve --help`).

Why not a `serve:` section of params.yaml: params.yaml holds what a pipeline result depends on (DVC
tracks it, `dvc exp run -S` changes it); where a server listens and how it batches change no result and
differ per deployment (laptop, behind a proxy, GPU box). They are validated here like a params section:
one ConfigError listing every bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ptune.config.checks import error, number

SCHEDULERS = ("continuous", "static")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"        # loopback by default; anything else is logged as a warning
    port: int = 8000
    alias: str = "champion"        # registry alias served for every task (and watched for hot swaps)
    max_batch_size: int = 32       # rows per model batch (dynamic batching gathers requests up to this)
    max_wait_ms: float = 5.0       # how long the first request of a batch waits for company
    batching: bool = True          # False: every request runs alone (the bench's reference)
    scheduler: str = "continuous"  # "continuous": rows join and leave the running decode batch at every step
    # (`ptune.serving.engine`); "static": whole requests batched until the longest row ends (`batcher`)
    max_prefill_tokens: int = 512  # continuous: source tokens of rows started per decode step (at least one row)
    max_inputs: int = 64           # inputs per request (more: 422)
    max_input_chars: int = 4000    # characters per input (more: 422); the task's token limit still cuts
    max_body_bytes: int = 1_000_000  # request body (more: 413)
    poll_seconds: float = 10.0     # registry poll for alias moves; 0 = never (no hot swap)
    max_queue: int = 1024          # rows waiting for the model beyond which a request is refused (503 + Retry-After)
    api_key: str | None = field(default=None, repr=False)  # None: no auth; else `Authorization: Bearer` on /v1

    def __post_init__(self) -> None:
        problems: list[str] = []
        number(problems, "--port", self.port, 0, 65535, integer=True)
        number(problems, "--max-batch-size", self.max_batch_size, 1, integer=True)
        number(problems, "--max-wait-ms", self.max_wait_ms, 0, 10_000)
        number(problems, "--max-inputs", self.max_inputs, 1, integer=True)
        number(problems, "--max-input-chars", self.max_input_chars, 1, integer=True)
        number(problems, "--max-body-bytes", self.max_body_bytes, 64, integer=True)
        number(problems, "--poll-seconds", self.poll_seconds, 0)
        number(problems, "--max-queue", self.max_queue, 1, integer=True)
        number(problems, "--max-prefill-tokens", self.max_prefill_tokens, 1, integer=True)
        if self.scheduler not in SCHEDULERS:
            problems.append(f"--scheduler {self.scheduler!r}: expected one of {list(SCHEDULERS)}")
        if self.api_key is not None and (not self.api_key.strip() or any(c.isspace() for c in self.api_key)):
            problems.append("--api-key / PTUNE_API_KEY: must be non-empty and hold no whitespace")
        if not self.alias.strip() or not self.host.strip():
            problems.append(f"--alias {self.alias!r} / --host {self.host!r}: must not be empty")
        if problems:
            raise error(problems, "serve settings")

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")
