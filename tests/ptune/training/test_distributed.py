"""Data-parallel training (ptune.training.distributed) on 2 gloo ranks equals one process at the global batch.

One launch of 2 ranks (torch elastic, spawned, as `ptune train --nproc 2` starts them) computes, for a causal
LM and a T5: the averaged gradient of one step on global batches of 8, 3 and 1 rows (so one rank gets no row),
and the prompt (through the residual MLP) after 5 steps at global batch 8 = 2 x 4; the test process computes
the same in one process.
The targets have different lengths, so the ranks' shares of a batch hold different numbers of target tokens:
an unweighted mean of the ranks' gradients, a sum, or another split of the rows would not match (checked)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from ptune.config import TrainConfig
from ptune.data.catalog import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ConfigError
from ptune.model.base import BaseModel, from_objects
from ptune.training import distributed
from ptune.training import train as train_mod
from ptune.training.distributed import SINGLE, Sync
from ptune.training.train import train_prompt
from tests.tiny_models import WORDS

SPEC = TaskSpec(name="toy", kind="classification", source=None, columns=("text",),
                formatter=lambda row: (row["text"], row["label"]), label_words=("good", "bad"),
                metrics=("accuracy",), max_source_tokens=32)
CFG = TrainConfig(n_tokens=4, init="random", batch_size=8, max_steps=5, eval_every=0, patience=0,
                  checkpoint_every=0, seed=3, lr=0.3, reparam="residual", reparam_bottleneck=16)  # + MLP grads
STEP_CFG = replace(CFG, grad_clip=0.0)  # a clipped gradient hides its scale: the sum would pass
BATCHES = {"8 rows": [0, 3, 5, 6, 9, 11, 12, 15], "3 rows": [2, 7, 16], "1 row": [4]}
TOL = 1e-5


def examples(n: int = 17, seed: int = 0) -> list[Example]:
    """17 rows (batches of 8, 8 and 1 a epoch), with targets of 1 to 4 words."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [Example(f"r{i}", f"Review: {words(rng.randint(2, 6))}\nSentiment:", words(1 + i % 4), {})
            for i in range(n)]


TRAIN = examples()


def load(kind: str, model_dir: str) -> BaseModel:
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(model_dir, dtype=torch.float32)
    return from_objects(model, AutoTokenizer.from_pretrained(model_dir), model_dir)


def step_gradient(base: BaseModel, rows: list[int], sync: Sync) -> torch.Tensor:
    """The prompt's gradient as the optimizer sees it, after one train_step on this rank's share of `rows`."""
    state = train_mod._new_state(base, SPEC, STEP_CFG, None, base.device)
    seen: list[torch.Tensor] = []
    state.optimizer.register_step_pre_hook(lambda *_: seen.append(state.prompt.raw.grad.detach().clone()))
    items = train_mod.encode_examples(base, SPEC, TRAIN)
    batch = train_mod._batch(base, items, sync.shard(rows), base.device)
    train_mod.train_step(base, state, batch, STEP_CFG, None, 0.0, sync)
    return seen[0]


def rank_worker(models: dict[str, str], out: str) -> dict:
    """One rank: gradients and a 5-step training for each model; rank 0 also returns how far the other
    rank's final prompt is from its own (the ranks must stay in step)."""
    with distributed.joined(cuda=False) as sync:
        torch.set_num_threads(1)
        found = {}
        for kind, model_dir in models.items():
            base = load(kind, model_dir)
            grads = {name: step_gradient(base, rows, sync) for name, rows in BATCHES.items()}
            prompt = train_prompt(base, SPEC, TRAIN, [], CFG, Path(out) / kind).prompt.weight.detach()
            others = [torch.empty_like(prompt) for _ in range(sync.world)]
            dist.all_gather(others, prompt.contiguous())
            found[kind] = {"grads": grads, "prompt": prompt.clone(), "rank_gap": max(
                float((other - prompt).abs().max()) for other in others)}
        return found


@pytest.fixture(scope="module")
def two_ranks(tiny_causal_dir, tiny_t5_dir, tmp_path_factory) -> dict:
    models = {"causal": str(tiny_causal_dir), "t5": str(tiny_t5_dir)}
    return distributed.launch(2, rank_worker, models, str(tmp_path_factory.mktemp("ranks")))


@pytest.fixture(params=["causal", "t5"])
def kind(request) -> str:
    return request.param


def test_the_averaged_gradient_is_the_global_batchs(two_ranks, kind, tiny_causal_dir, tiny_t5_dir):
    base = load(kind, str(tiny_causal_dir if kind == "causal" else tiny_t5_dir))
    items = train_mod.encode_examples(base, SPEC, TRAIN)
    for name, rows in BATCHES.items():
        expected, got = step_gradient(base, rows, SINGLE), two_ranks[kind]["grads"][name]
        assert float(expected.abs().max()) > 1e-4, name  # a gradient worth comparing
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7), (name, (got - expected).abs().max())
        if name == "1 row":
            continue
        shares = [Sync(r, 2).shard(rows) for r in range(2)]
        tokens = [sum(len(items[i].target_ids) for i in share) for share in shares]
        assert tokens[0] != tokens[1], name  # unequal shares: the weighting is exercised
        unweighted = sum(step_gradient(base, share, SINGLE) for share in shares) / 2
        assert not torch.allclose(unweighted, expected, rtol=1e-4, atol=1e-7), name  # the check can fail


def test_two_ranks_at_batch_4_train_the_prompt_one_process_trains_at_batch_8(two_ranks, kind, tiny_causal_dir,
                                                                               tiny_t5_dir, tmp_path):
    base = load(kind, str(tiny_causal_dir if kind == "causal" else tiny_t5_dir))
    one = train_prompt(base, SPEC, TRAIN, [], CFG, tmp_path / "one").prompt.weight.detach()
    half_cfg = replace(CFG, batch_size=4)  # what one rank alone would train
    half = train_prompt(base, SPEC, TRAIN, [], half_cfg, tmp_path / "half").prompt.weight.detach()
    ranks = two_ranks[kind]
    assert float((ranks["prompt"] - one).abs().max()) < TOL
    assert ranks["rank_gap"] == 0.0  # every rank holds the same prompt, bit for bit
    assert float((half - one).abs().max()) > 100 * TOL  # the tolerance can tell another batch apart


def test_a_rank_gets_every_world_th_row_of_the_batch():
    rows = [7, 1, 4, 9, 2]
    assert [Sync(r, 2).shard(rows) for r in range(2)] == [[7, 4, 2], [1, 9]]
    assert [Sync(r, 3).shard([5]) for r in range(3)] == [[5], [], []]
    assert SINGLE.shard(rows) == rows and SINGLE.main and not Sync(1, 2).main


def test_a_rank_count_the_machine_cannot_run_is_a_config_error():
    with pytest.raises(ConfigError, match="--nproc 0"):
        distributed.check_nproc(0, cuda=False)
    with pytest.raises(ConfigError, match=f"only {torch.cuda.device_count()} CUDA device"):
        distributed.check_nproc(torch.cuda.device_count() + 1, cuda=True)
    distributed.check_nproc(3, cuda=False)  # gloo: any count


def test_the_failure_line_names_the_root_cause():
    killed = SimpleNamespace(exitcode=-9, pid=12, timestamp=20, message="", signal_name=lambda: "SIGKILL")
    lost_peer = SimpleNamespace(exitcode=1, pid=11, timestamp=10, message={"message": "DistBackendError: peer\n"})
    raised = SimpleNamespace(exitcode=1, pid=13, timestamp=5, message={"message": "DataError: train split\nempty"})
    assert "rank 1 (pid 12) was killed by SIGKILL;" in distributed.failure_line({0: lost_peer, 1: killed}, 2)
    line = distributed.failure_line({0: lost_peer, 1: raised}, 2)  # no signal: the first to fail
    assert line.startswith("data-parallel training on 2 processes stopped: rank 1 (pid 13) failed: DataError: "
                           "train split empty; every other rank was stopped") and "\n" not in line
