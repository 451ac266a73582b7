"""Benchmarks with EleutherAI's lm-evaluation-harness (`pip install "hololm[eval]"`, which adds
`lm_eval`).

A hololm checkpoint is an ordinary Hugging Face model directory, and `import hololm` registers
its families with `AutoConfig` / `AutoModelForCausalLM`, so the harness's own "hf" model loads
it like any hub model — no custom-code flag and no wrapper. From Python:

    from hololm.eval.lm_eval import run_lm_eval
    results = run_lm_eval("runs/holo/checkpoints", ["lambada_openai", "hellaswag"], limit=500)
    print(results["results"])

From the shell, run the harness's own command line through this module, which imports hololm
first (the plain `lm_eval` command does not, and fails on "model type `holo`"):

    python -m hololm.eval.lm_eval --model hf \\
        --model_args pretrained=runs/holo/checkpoints/step_5000,backend=causal \\
        --tasks lambada_openai --batch_size 8

Hub tasks download their data sets on first use. Offline, write a local task: a YAML file in a
folder passed as `include_path`, reading a local file through `datasets`' json builder:

    task: my_task
    dataset_path: json
    dataset_kwargs: {data_files: {test: /data/my_task.jsonl}}
    test_split: test
    output_type: multiple_choice          # or loglikelihood
    doc_to_text: "{{question}}"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{label}}"
    metric_list: [{metric: acc}]

and call `run_lm_eval(checkpoint, ["my_task"], include_path=folder, include_defaults=False)`
(leaving out the built-in task index also makes start-up a few seconds faster).

Batches of any size are exact: the harness pads loglikelihood batches on the right and
generation batches on the left, and hololm models skip padding (each row's memory starts at its
first real token).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hololm.eval.checkpoints import resolve_checkpoint
from hololm.train.checkpoint import MODEL_FILE, verify_checksums

INSTALL_HINT = 'lm-evaluation-harness is not installed: pip install "hololm[eval]" (lm_eval)'


def run_lm_eval(checkpoint: str | Path, tasks: Sequence[str], *,
                include_path: str | Path | None = None, include_defaults: bool = True,
                limit: int | float | None = None, batch_size: int = 1,
                num_fewshot: int | None = None, device: str | torch.device = "cpu",
                dtype: str = "auto", log_samples: bool = False) -> dict:
    """`lm_eval.simple_evaluate` with the harness's "hf" model on a checkpoint (a step
    directory, or a checkpoint directory: its latest step). Returns the harness's result dict
    (`["results"][task]` holds the metrics; `["samples"]` the per-document requests and
    responses when `log_samples`)."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    path = resolve_checkpoint(checkpoint)  # CheckpointError before the harness starts
    verify_checksums(path, (MODEL_FILE, "config.json"))
    task_manager = TaskManager(include_path=None if include_path is None else str(include_path),
                               include_defaults=include_defaults)
    # a dict, not "k=v,..." text, so that paths with commas survive; backend=causal because
    # the harness only recognises built-in model types as causal by name
    model_args = {"pretrained": str(path), "backend": "causal", "dtype": dtype}
    return lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=list(tasks),
                                   task_manager=task_manager, limit=limit,
                                   batch_size=batch_size, num_fewshot=num_fewshot,
                                   device=str(device), log_samples=log_samples)


if __name__ == "__main__":  # python -m hololm.eval.lm_eval <lm_eval's own arguments>
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
