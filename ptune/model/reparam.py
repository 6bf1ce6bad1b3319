"""Residual reparameterization of a soft prompt (Razdaibiedina et al., ACL 2023, "Residual Prompt Tuning").

During training every prompt token goes through one shallow bottleneck MLP shared by all tokens, with a
residual connection: P' = LayerNorm(W_up ReLU(W_down P)) + P, and P and the MLP train jointly. The model only
ever sees P' (P, d), so at save time `fold()` computes it once and the artifact is a plain prompt: registry,
PEFT export and serving are unchanged.

One departure from the paper, for prompts initialised from embeddings: the LayerNorm's gain starts at 0, so
P' = P at step 0 (the `labels` init is kept exactly; the paper's unit gain would add unit-scale noise, about
7x the size of a SmolLM2 embedding entry). The gain gets a gradient from the first step, like LoRA's zero B.
"""

from __future__ import annotations

import torch
from torch import nn

from ptune.model.soft_prompt import SoftPrompt


class ResidualMLP(nn.Module):
    """x -> LayerNorm(up(relu(down(x)))) + x, applied row-wise to a (P, d) prompt."""

    def __init__(self, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        self.norm = nn.LayerNorm(hidden)
        nn.init.zeros_(self.norm.weight)  # P' = P at initialisation (module doc)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.norm(self.up(torch.relu(self.down(prompt)))) + prompt  # (P, d)


class TrainablePrompt(nn.Module):
    """What the optimizer trains: the raw prompt (P, d) and, with reparam 'residual', the MLP over it.

    `forward()` is the (P, d) prompt the base model sees (with grad); `fold()` the same, detached: the plain
    prompt to save or validate with."""

    def __init__(self, prompt: SoftPrompt, reparam: str = "none", bottleneck: int = 400) -> None:
        super().__init__()
        self.prompt = prompt
        self.mlp = ResidualMLP(prompt.hidden, bottleneck).to(prompt.weight.device) if reparam == "residual" else None

    @property
    def raw(self) -> torch.Tensor:
        return self.prompt.weight  # (P, d)

    def forward(self) -> torch.Tensor:
        weight = self.prompt.weight
        return weight if self.mlp is None else self.mlp(weight)  # (P, d)

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        return self.forward().detach().clone()  # (P, d)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The MLP's tensors for a checkpoint ('reparam.<name>'); empty without reparam."""
        return {} if self.mlp is None else {f"reparam.{k}": v for k, v in self.mlp.state_dict().items()}

    def load_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `extra_tensors` (strict: every MLP tensor must be there)."""
        if self.mlp is not None:
            self.mlp.load_state_dict({k.removeprefix("reparam."): v for k, v in tensors.items()
                                      if k.startswith("reparam.")})
