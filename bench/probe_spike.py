"""Take a loss spike apart: which update caused it, which prompt vector, and does a fixed first token remove it.

Trains TASK with a bench_recipe recipe until the spike guard first skips a step (its loss > spike_factor x
the running median), then, on that step's batch:
1. the batch loss and each row's probability mass on the label words' first tokens, under the prompt before
   the last applied update and after it (what the guard saw; the label words tokenised as training does);
2. the same two prompts with the frozen weights in fp32 and no autocast (is it a bf16 effect?);
3. the update applied to one prompt vector at a time (which vector carries the spike?);
4. both prompts behind a fixed real token, [token][prompt][text] (`--sink`), the layout BOS models get.
Prints JSON and writes bench/results/spike_probe_<task>.json. Asserts nothing. Reproducing a spike needs the
run's exact arithmetic: same CPU kind and thread count (the 2026-11-29 spike: AMD EPYC, 2 threads).
Usage: python bench/probe_spike.py [--task strategyqa] [--recipe new_lr0.03] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_recipe import RECIPES, sink_token  # noqa: E402
from bench.common import prepared_task, scratch_project  # noqa: E402
from ptune.evaluation.scoring import label_target_ids  # noqa: E402
from ptune.model.base import load_held_model  # noqa: E402
from ptune.model.precision import autocast, autocast_dtype, training_attention  # noqa: E402
from ptune.model.soft_prompt import shared_prompt_inputs  # noqa: E402
from ptune.pipeline import stages  # noqa: E402
from ptune.training import train as train_module  # noqa: E402


class Found(Exception):
    """Raised from inside the training loop once the first spike is captured."""


def capture(run, base) -> dict:
    """Train until the guard skips a step; return {step, loss, before, after, batch} for it."""
    original, last = train_module.train_step, {}

    def step(base_, state, batch, cfg, amp, cap):
        current = state.prompt().detach().clone()
        loss, skipped, rolled = original(base_, state, batch, cfg, amp, cap)
        if skipped:
            raise Found({"step": state.step + 1, "loss": loss, "before": last.get("prompt", current),
                         "after": current, "batch": {k: v.clone() for k, v in batch.items()}})
        last["prompt"] = current
        return loss, skipped, rolled

    train_module.train_step = step
    try:
        stages.train(run, base)
    except Found as found:
        return found.args[0]
    finally:
        train_module.train_step = original
    raise SystemExit("no step was skipped: no spike to take apart (try another --seed or --threads)")


def label_loss(base, prompt: torch.Tensor, batch: dict, label_ids: list[int], amp) -> dict:
    """Batch loss, and per row: loss, probability mass on the label words' first tokens, top token."""
    with torch.no_grad(), training_attention(base.model, base.device, amp), autocast(base.device, amp):
        kwargs = dict(shared_prompt_inputs(base, prompt, **batch))
        labels = kwargs.pop("labels")[:, 1:]
        hidden = base.model.base_model(**kwargs, use_cache="cache" in kwargs).last_hidden_state[:, :-1]
        keep = labels != -100
        logp = torch.log_softmax(base.model.get_output_embeddings()(hidden[keep]).float(), dim=-1)
    rows = -logp.gather(1, labels[keep].unsqueeze(1)).squeeze(1)
    return {"loss": round(float(rows.mean()), 3), "row_loss": [round(x, 2) for x in rows.tolist()],
            "label_mass": [round(x, 3) for x in logp[:, label_ids].exp().sum(-1).tolist()],
            "top_token": base.tokenizer.convert_ids_to_tokens(logp.argmax(-1).tolist())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="strategyqa")
    parser.add_argument("--recipe", default="new_lr0.03", choices=list(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sink", nargs="+", default=["<|endoftext|>", "<|im_start|>"])
    args = parser.parse_args()
    scratch = scratch_project("probe-spike-")
    run, base = prepared_task(args.task, ROOT / "params.yaml")
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    train = {**{k: v for k, v in recipe.items() if k != "sink"}, "seed": args.seed,
             "eval_every": 0}  # no validation: it changes no step before early stopping could, and costs time
    run = stages.TaskRun.build(args.task, run.params, source="bench", train=train, run_dir=scratch / "out")
    with sink_token(base, recipe.get("sink")):
        spike = capture(run, base)
    amp = autocast_dtype(run.params.train.precision, base.device, base.n_params, "train.precision")
    labels = [ids[0] for ids in label_target_ids(base, run.spec.label_words)]  # as training tokenises targets
    before, after, batch = spike["before"], spike["after"], spike["batch"]
    out = {"task": args.task, "recipe": args.recipe, "seed": args.seed, "threads": args.threads,
           "step": spike["step"], "logged_loss": round(spike["loss"], 4),
           "update_rms": round(float((after - before).pow(2).mean().sqrt()), 5),
           "prompt_rms": round(float(after.pow(2).mean().sqrt()), 4),
           "held": {"before": label_loss(base, before, batch, labels, amp),
                    "after": label_loss(base, after, batch, labels, amp)},
           "one_vector_updated": [label_loss(base, torch.cat([before[:i], after[i:i + 1], before[i + 1:]]), batch,
                                             labels, amp)["loss"] for i in range(after.shape[0])]}
    for token in args.sink:
        with sink_token(base, token):
            out[f"sink {token}"] = {name: label_loss(base, p, batch, labels, amp)["loss"]
                                    for name, p in (("before", before), ("after", after))}
    fp32 = load_held_model(run.params.model, "fp32", threads=args.threads)
    out["fp32"] = {name: label_loss(fp32, p, batch, labels, None)["loss"] for name, p in (("before", before), ("after", after))}
    print(json.dumps(out, indent=1))
    (ROOT / "bench" / "results" / f"spike_probe_{args.task}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
