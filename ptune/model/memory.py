"""How much memory prompt tuning needs, from the architecture config alone (no weights are loaded).

peak = runtime + weights + trainable + grads + optimizer + activations (+ the CPU allocator's leftovers), where
activations are what autograd saves through every frozen layer (the gradient must reach the prompt), counted
tensor by tensor for a Llama-style layer; with activation checkpointing (train.gradient_checkpointing) only each
layer's input is kept and one layer's saved set is rebuilt at a time in the backward. `full_ft_adamw`, the
reference, trains every weight (16 bytes/param)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from ptune.errors import ConfigError

QUANTIZE = ("none", "int8", "nf4")
MODES = ("train", "eval", "full_ft_adamw")
MiB, GiB = 2**20, 2**30
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4 bits + double-quantized absmax (8-bit per 64, fp32 per 256 blocks)
INT8_BYTES = 1.0                            # + one fp32 scale per output row (LLM.int8 / torchao weight-only)
CPU_RUNTIME = 389 * MiB   # peak RSS: torch 2.13 + transformers 5.24 + ptune imported, a (tiny) Llama loaded (measured)
TOKENIZER_PER_ENTRY = 750  # bytes of a loaded fast tokenizer per vocab entry (SmolLM2: ~37 MB for 49,152)
CUDA_RUNTIME = 512 * MiB  # CUDA context + cuBLAS workspace (stated, not measured: no GPU was lent)
FULL_FT_BYTES = 16        # bf16 weight + bf16 grad + fp32 master + fp32 Adam m and v


@dataclass(frozen=True)
class Shape:
    """The architecture numbers the estimate needs (a decoder-only transformer)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    linear_params: int    # the decoder layers' nn.Linear weights (what int8/nf4 quantize)
    linear_rows: int      # their output rows (one int8 scale each)
    embed_params: int     # input embedding + an untied lm_head: never quantized
    other_params: int     # norms and biases: never quantized

    @property
    def n_params(self) -> int:
        return self.linear_params + self.embed_params + self.other_params


# Llama-2-7B's shape (hidden 4096, MLP 11008, 32 layers x 32 heads, vocab 32000, untied head): numbers, not weights.
LLAMA2_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}


@dataclass(frozen=True)
class Setting:
    """What a run holds and computes; the defaults are params.yaml's (train at batch 8, 20-token prompt)."""

    mode: str = "train"           # train | eval | full_ft_adamw
    quantize: str = "none"        # none | int8 | nf4: the decoder layers' linear weights
    held: str = "fp32"            # fp32 | bf16 (every weight) | auto (linear weights bf16 when computing in bf16)
    precision: str = "fp32"       # fp32 | bf16 (autocast): the dtype activations are saved in
    batch_size: int = 8
    seq_len: int = 272            # text tokens per row: a task's max_source_tokens (256) + max_target_tokens (16)
    target_tokens: int = 16       # target tokens per row (the loss's logits)
    n_tokens: int = 20            # prompt length P
    optimizer: str = "adafactor"  # adafactor | adamw
    reparam_bottleneck: int = 0   # residual MLP width (0: no reparam)
    spike_guard: bool = True      # train.spike_factor > 0 keeps a copy of the prompt and optimizer state
    device: str = "cpu"           # cpu | cuda
    attention: str = "sdpa"       # sdpa (flash: saves q, k, v, out) | eager (saves the probabilities)
    checkpointing: bool = False   # train: keep each layer's input only, recompute the layer in the backward

    def __post_init__(self) -> None:  # every bad value in one ConfigError
        allowed = {"mode": MODES, "quantize": QUANTIZE, "held": ("fp32", "bf16", "auto"),
                   "precision": ("fp32", "bf16"), "optimizer": ("adafactor", "adamw"), "device": ("cpu", "cuda"),
                   "attention": ("sdpa", "eager")}
        problems = [f"{k} = {getattr(self, k)!r}: allowed values are {', '.join(v)}"
                    for k, v in allowed.items() if getattr(self, k) not in v]
        problems += [f"{f.name} = {getattr(self, f.name)!r}: must be an integer >= 0" for f in fields(self)
                     if f.type == "int" and not (isinstance(getattr(self, f.name), int) and getattr(self, f.name) >= 0)]
        problems += [f"{f.name} = {getattr(self, f.name)!r}: must be true or false" for f in fields(self)
                     if f.type == "bool" and not isinstance(getattr(self, f.name), bool)]
        if problems:
            raise ConfigError("invalid memory setting:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Breakdown:
    """Bytes per term of one estimate; `total` is the peak."""

    runtime: float
    weights: float
    trainable: float   # prompt + reparam MLP parameters (fp32); full_ft_adamw counts its weights under `weights`
    grads: float
    optimizer: float   # optimizer state (+ the spike guard's copy of it and the trainable)
    activations: float
    allocator: float = 0.0  # CPU: freed forward temporaries glibc malloc keeps between saved tensors (train)

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, float]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "total": self.total}


def shape_of(config) -> Shape:
    """A Shape from a transformers config (or a dict like LLAMA2_7B); parameters counted on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, dict):
        config = AutoConfig.for_model(**config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", False))
    embeds = {id(p) for m in (inp, out) if m is not None for p in m.parameters()}
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and id(m.weight) not in embeds]
    linear = sum(m.weight.numel() for m in linears)
    untied = out is not None and tied and out.weight is not inp.weight  # meta init may leave a tie undone
    embed = sum(p.numel() for p in model.parameters() if id(p) in embeds) - (out.weight.numel() if untied else 0)
    heads = text.num_attention_heads
    return Shape(hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                 heads=heads, kv_heads=getattr(text, "num_key_value_heads", None) or heads,
                 head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads, vocab=text.vocab_size,
                 linear_params=linear, linear_rows=sum(m.out_features for m in linears), embed_params=embed,
                 other_params=sum(p.numel() for p in model.parameters() if id(p) not in embeds) - linear)


def trainable_params(shape: Shape, s: Setting) -> list[tuple[int, int]]:
    """(rows, cols) of every trainable tensor: the prompt (P, d) and the residual MLP (ptune.model.reparam)."""
    d, b = shape.hidden, s.reparam_bottleneck
    mlp = [(b, d), (b, 1), (d, b), (d, 1), (d, 1), (d, 1)] if b else []  # down W, b; up W, b; LayerNorm w, b
    return [(s.n_tokens, d), *mlp]


def optimizer_bytes(tensors: list[tuple[int, int]], optimizer: str) -> int:
    """AdamW: two fp32 moments per value. Adafactor (no momentum): row + column factors of a matrix, a vector whole."""
    if optimizer == "adamw":
        return sum(8 * r * c for r, c in tensors)
    return sum(4 * (r + c if min(r, c) > 1 else r * c) for r, c in tensors)


def weight_bytes(shape: Shape, s: Setting) -> float:
    """Frozen weights as held: quantized linear layers, embeddings and norms in the held dtype."""
    full = 2 if s.held == "bf16" else 4
    linear = 2 if s.held == "bf16" or (s.held == "auto" and s.precision == "bf16") else 4
    if s.quantize == "int8":
        quant = shape.linear_params * INT8_BYTES + 4 * shape.linear_rows
    elif s.quantize == "nf4":
        quant = shape.linear_params * NF4_BYTES
    else:
        quant = shape.linear_params * linear
    return quant + (shape.embed_params + shape.other_params) * full


def _bytes(s: Setting) -> tuple[int, int]:
    """(activation, residual-stream) bytes per value: the residual stays fp32 unless every weight is bf16."""
    return (2 if s.precision == "bf16" else 4), (2 if s.held == "bf16" else 4)


def layer_saved(shape: Shape, s: Setting, tokens: int, q_len: int, kv_len: int, full_ft: bool = False) -> float:
    """Bytes autograd saves in one decoder layer for `tokens` positions (rows x q_len) attending to kv_len keys.

    Per position: the two RMSNorms' inputs (the residual stream; a norm times a frozen weight saves only
    its input), the MLP's gate, SiLU and up outputs (3 x intermediate; frozen linears save no input), and the
    attention's q with k and v repeated to every head over kv_len; sdpa (flash) adds its output and log-sum-exp,
    eager the probabilities (fp32 softmax, plus its bf16 copy under autocast). Full fine-tuning adds every
    linear's input: the two normed states, the attention output and the MLP product."""
    a, r = _bytes(s)
    h, q = shape.hidden, shape.heads * shape.head_dim
    per = 2 * h * r + 3 * shape.intermediate * a + 2 * q * a * kv_len / q_len + q * a
    if s.attention == "sdpa":
        per += q * a + shape.heads * 4
    else:
        per += shape.heads * kv_len * (4 + (a if a == 2 else 0))
    if full_ft:
        per += (2 * h + q + shape.intermediate) * a
    return tokens * per


def activation_bytes(shape: Shape, s: Setting) -> float:
    """Saved activations (train) or live tensors (eval) at the peak, plus one layer's working set."""
    a, r = _bytes(s)
    B, T, P, L, V = s.batch_size, s.seq_len, s.n_tokens, shape.layers, shape.vocab
    ckpt = s.checkpointing and s.mode == "train"
    T = T + P if ckpt else T  # checkpointed: the prompt runs in every row (ptune.training.train.recomputed_layers)
    kv = T + P if s.mode == "eval" or (s.mode == "train" and not ckpt) else T
    working = B * T * (3 * shape.intermediate * a + 2 * shape.hidden * 4)  # one layer's transients / gradients
    cache = L * B * kv * 2 * shape.kv_heads * shape.head_dim * a  # every layer's keys/values (prompt + rows)
    small = B * T * kv * 4 + 2 * B * T * shape.head_dim * 4 + B * T * shape.hidden * r  # mask, rope, final norm
    casts = _autocast_copies(shape, s)
    if s.mode == "eval":
        return working + cache + small + B * s.target_tokens * V * 4 + casts
    if s.mode == "full_ft_adamw":
        return L * layer_saved(shape, s, B * T, T, T, full_ft=True) + working + small + 2 * B * T * V * 4
    logits = 2 * B * s.target_tokens * V * 4  # fp32 target logits and their gradient (ptune's target_loss)
    if ckpt:  # every layer's input (B, P+T, h), and one layer's saved set while the backward recomputes it
        return L * B * T * shape.hidden * r + layer_saved(shape, s, B * T, T, T) + small + logits + working + casts
    rows = L * layer_saved(shape, s, B * T, T, kv)
    prompt = L * layer_saved(shape, s, P, P, P)  # the prompt's own pass, once, at batch 1
    return rows + prompt + cache + small + logits + working + casts


def _autocast_copies(shape: Shape, s: Setting) -> float:
    """bf16 copies of weights not held bf16: saved by autocast (train), or cast per block on CPU (eval)."""
    if s.precision != "bf16" or s.held == "bf16":
        return 0.0
    head = shape.vocab * shape.hidden  # the (often tied) output layer stays fp32 under `auto`
    linear = shape.linear_params if s.held == "fp32" and s.quantize == "none" else 0
    if s.checkpointing:  # train: saved for one layer's recompute at a time
        linear /= shape.layers
    if s.mode == "eval":
        return 2.0 * (shape.n_params if s.device == "cpu" and s.quantize == "none" else 0)
    return 2.0 * (head + linear)


def estimate(shape: Shape, setting: Setting | None = None, **changes) -> Breakdown:
    """Peak bytes of one training step (or evaluation forward) under `setting` (with `changes` applied)."""
    s = Setting(**{**(setting.__dict__ if setting else {}), **changes})
    runtime = CPU_RUNTIME + TOKENIZER_PER_ENTRY * shape.vocab if s.device == "cpu" else CUDA_RUNTIME
    if s.mode == "full_ft_adamw":
        if s.quantize != "none":
            raise ConfigError(f"full_ft_adamw trains every weight: quantize must be 'none', not {s.quantize!r}")
        n = shape.n_params
        return Breakdown(runtime, 2 * n, 0, 2 * n, (FULL_FT_BYTES - 4) * n, activation_bytes(shape, s),
                         allocator_bytes(shape, s))
    weights, acts = weight_bytes(shape, s), activation_bytes(shape, s)
    if s.mode == "eval":
        return Breakdown(runtime, weights, 4 * s.n_tokens * shape.hidden, 0, 0, acts)
    tensors = trainable_params(shape, s)
    n = sum(rows * cols for rows, cols in tensors)
    opt = optimizer_bytes(tensors, s.optimizer)
    return Breakdown(runtime, weights, 4 * n, 4 * n, opt + (4 * n + opt if s.spike_guard else 0), acts,
                     allocator_bytes(shape, s))


def allocator_bytes(shape: Shape, s: Setting) -> float:
    """CPU training: after the first step glibc keeps each layer's freed forward temporaries (MLP product, attention
    and MLP outputs) stranded between saved tensors. SmolLM2, batch 8 x 128: +296 MiB from step 1 to 3; this: 315.
    Checkpointed, each kept layer input strands them alike: the estimate without this term fell 413 MiB short."""
    if s.device != "cpu" or s.mode != "train":
        return 0.0
    rows = s.seq_len + (s.n_tokens if s.checkpointing else 0)  # checkpointed: the prompt runs in every row
    return shape.layers * s.batch_size * rows * (shape.intermediate + 2 * shape.hidden) * _bytes(s)[0]


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": MiB, "mb": MiB, "mib": MiB, "g": GiB,
          "gb": GiB, "gib": GiB, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_size(text: str) -> int:
    """'24GB', '24GiB', '80G', '16000MB' -> bytes. GB, MB (and G, M) are read as GiB, MiB: GPU memory is sold
    in binary units (a "24GB" card has 24,576 MiB). Anything else is one ConfigError line."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or not unit or float(match.group(1)) <= 0:
        raise ConfigError(f"memory size {text!r}: expected a positive number with a unit, e.g. 24GB, 24GiB, 80G, 16000MB")
    return int(float(match.group(1)) * unit)


def human(n: float) -> str:
    """Bytes as GiB (or MiB below 1 GiB), e.g. '3.21 GiB'."""
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.0f} MiB"


@dataclass(frozen=True)
class Verdict:
    """One device with the least quantization that fits, else `device_map: auto` over `devices` devices."""

    quantize: str
    device_map: str   # "single" | "auto"
    devices: int
    peak: float       # the larger of the train and eval peaks under `quantize`
    line: str


def peaks(shape: Shape, train: Setting, evaluate: Setting) -> dict[str, tuple[Breakdown, Breakdown]]:
    """quantize mode -> (train estimate, eval estimate)."""
    return {q: (estimate(shape, train, quantize=q, mode="train"), estimate(shape, evaluate, quantize=q, mode="eval"))
            for q in QUANTIZE}


def fits(shape: Shape, train: Setting, evaluate: Setting, budget: int) -> Verdict:
    """Try quantize none, int8, nf4 on one device; if none fits, the number of devices `device_map: auto`
    needs at quantize none (weights and activations split by layer; each device holds its own runtime)."""
    peak = {q: max(t.total, e.total) for q, (t, e) in peaks(shape, train, evaluate).items()}
    for q in QUANTIZE:
        if peak[q] <= budget:
            return Verdict(q, "single", 1, peak[q], f"fits: quantize {q} on one device "
                                                    f"({human(peak[q])} of {human(budget)})")
    runtime = estimate(shape, train).runtime
    need = {q: -(-int(peak[q] - runtime) // max(budget - int(runtime), 1)) for q in ("none", "nf4")}
    return Verdict("none", "auto", need["none"], peak["none"],
                   f"nothing fits one device (nf4 needs {human(peak['nf4'])} of {human(budget)}): device_map auto "
                   f"over {need['none']} devices of {human(budget)} at quantize none (nf4: {need['nf4']})")


def settings_for(params, seq_len: int | None = None, device: str = "cuda") -> tuple[Setting, Setting]:
    """(train, eval) Settings from a ptune Params on `device`; `auto` precision means bf16 on CUDA."""
    def precision(policy: str) -> str:
        return "bf16" if policy == "bf16" or (policy == "auto" and device == "cuda") else "fp32"

    t, e = params.train, params.evaluate
    common = dict(held=params.model_dtype, device=device, n_tokens=t.n_tokens,
                  **({"seq_len": seq_len} if seq_len is not None else {}))
    train = Setting(mode="train", precision=precision(t.precision), batch_size=t.batch_size, optimizer=t.optimizer,
                    reparam_bottleneck=t.reparam_bottleneck if t.reparam == "residual" else 0,
                    spike_guard=t.spike_factor > 0, checkpointing=t.gradient_checkpointing, **common)
    return train, Setting(mode="eval", precision=precision(e.precision), batch_size=e.batch_size, **common)
