"""Recall and reasoning benchmark: train small models of every family on each synthetic task,
sweep the learning rate, and report test accuracy (or MSE) of the learning rate that did best on
a validation set — side by side with softmax attention.

    hololm bench recall --quick --output_dir runs/recall      # every task and family, 2 CPU cores
    hololm bench recall --full --device cuda --output_dir D   # zoology's sweep sizes, for a GPU

Writes recall.csv (test results of the selected learning rates), recall_sweep.csv (every run),
recall.md (the tables) and recall_vs_seq_len.png, recall_vs_kv_pairs.png, recall_vs_state.png.
Runs are independent jobs spread over `--workers` processes (one thread each on CPU).
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hololm.bench.recall_models import MODELS, VectorModel, build_recall_model
from hololm.bench.recall_profiles import PROFILES, Profile, Task, select, slice_length
from hololm.bench.recall_report import write_reports
from hololm.data.synthetic import IGNORE, TaskData, split_seeds


@dataclass(frozen=True)
class Job:
    task: Task
    family: str
    d_model: int
    lr: float
    profile: Profile
    device: str


def _concat(parts: list[TaskData]) -> TaskData:
    """Stack slices of different lengths, padding at the end (unscored, so causal models see the
    same prefix)."""
    length = max(p.inputs.shape[1] for p in parts)

    def pad(x: torch.Tensor, value) -> torch.Tensor:
        extra = length - x.shape[1]
        if extra == 0:
            return x
        shape = (x.shape[0], extra, *x.shape[2:])
        return torch.cat([x, torch.full(shape, value, dtype=x.dtype)], dim=1)

    vector = parts[0].mask is not None
    return TaskData(torch.cat([pad(p.inputs, 0) for p in parts]),
                    torch.cat([pad(p.targets, 0 if vector else IGNORE) for p in parts]),
                    torch.cat([pad(p.mask, False) for p in parts]) if vector else None)


def make_split(task: Task, split: str, seed: int, examples: int,
               slices: tuple[dict, ...]) -> list[TaskData]:
    """One TaskData per slice, seeded per (split, slice) so the splits never share a draw."""
    base = split_seeds(seed)[split]
    extra = {} if task.vocab_size is None else {"vocab_size": task.vocab_size}
    return [task.generate(num_examples=examples, seed=1000 * base + i, **extra, **kwargs)
            for i, kwargs in enumerate(slices)]


def _forward(model: torch.nn.Module, inputs: torch.Tensor, vector: bool) -> torch.Tensor:
    return model(inputs) if vector else model(input_ids=inputs, use_cache=False).logits


def _loss(out: torch.Tensor, data: TaskData) -> torch.Tensor:
    scored = data.scored()
    if data.mask is not None:
        return F.mse_loss(out[scored].float(), data.targets[scored])
    return F.cross_entropy(out[scored].float(), data.targets[scored])


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, device: str, max_tokens: int = 2**15
             ) -> dict:
    """accuracy (scored targets right), sequence_accuracy (all of an example's targets right) and
    mse (vector tasks), over `data` in batches of about `max_tokens` tokens."""
    model.eval()
    vector = data.mask is not None
    batch = max(1, max_tokens // data.inputs.shape[1])
    correct = total = whole = 0
    squared = 0.0
    for start in range(0, len(data), batch):
        part = TaskData(*(t[start:start + batch].to(device) if t is not None else None
                          for t in (data.inputs, data.targets, data.mask)))
        out = _forward(model, part.inputs, vector).float()
        scored = part.scored()
        if vector:
            squared += (out[scored] - part.targets[scored]).pow(2).mean(-1).sum().item()
            total += scored.sum().item()
            continue
        hit = (out.argmax(-1) == part.targets) | ~scored
        correct += (hit & scored).sum().item()
        total += scored.sum().item()
        whole += hit.all(dim=1).sum().item()
    model.train()
    if vector:
        return {"accuracy": math.nan, "sequence_accuracy": math.nan, "mse": squared / total}
    return {"accuracy": correct / total, "sequence_accuracy": whole / len(data), "mse": math.nan}


def _score(result: dict) -> float:
    """Higher is better: accuracy, or −MSE for vector tasks."""
    return -result["mse"] if math.isnan(result["accuracy"]) else result["accuracy"]


def run_job(job: Job) -> list[dict]:
    """Train one (task, family, width, lr) and evaluate it on every test slice."""
    task, profile = job.task, job.profile.for_task(job.task.name)
    torch.manual_seed(profile.seed)
    vector = task.vocab_size is None
    started = time.perf_counter()
    train = _concat(make_split(task, "train", profile.seed,
                               task.train_examples // len(task.train), task.train))
    valid = _concat(make_split(task, "validation", profile.seed, 256 // len(task.train) + 1,
                               task.train))
    lm = build_recall_model(job.family, task.vocab_size or 2, job.d_model, profile.n_layers,
                            task.max_len)
    model = VectorModel(lm, train.inputs.shape[-1], train.targets.shape[-1]) if vector else lm
    model.to(job.device).train()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad
                 and not (vector and p is lm.model.embed_tokens.weight))
    opt = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=(0.9, 0.98),
                            weight_decay=profile.weight_decay)
    steps, warmup = profile.steps, profile.warmup_steps
    decay = profile.schedule == "cosine"
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))) if decay else 1.0))
    order = torch.Generator().manual_seed(profile.seed)
    step, best = 0, -math.inf
    while step < steps:
        idx = torch.randint(len(train), (profile.batch_size,), generator=order)
        batch = TaskData(*(t[idx].to(job.device) if t is not None else None
                           for t in (train.inputs, train.targets, train.mask)))
        loss = _loss(_forward(model, batch.inputs, vector), batch)
        if not torch.isfinite(loss):
            break  # diverged at this learning rate: score what the model had
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        step += 1
        if step % profile.eval_every == 0 or step == steps:
            best = max(best, _score(evaluate(model, valid, job.device)))
            if best >= profile.target_accuracy:
                break
    validation = evaluate(model, valid, job.device)
    rows = []
    for kwargs, data in zip(task.test, make_split(task, "test", profile.seed, task.test_examples,
                                                  task.test), strict=True):
        seq_len = slice_length(task, kwargs)
        rows.append({
            "task": task.name, "model": job.family, "d_model": job.d_model,
            "seq_len": seq_len, "num_kv_pairs": kwargs.get("num_kv_pairs", kwargs.get(
                "num_pairs", "")),
            **evaluate(model, data, job.device),
            "state_bytes": lm.state_bytes(1, seq_len), "params": params, "lr": job.lr,
            "steps": step, "validation_score": _score(validation),
            "train_seq_len": max(slice_length(task, s) for s in task.train),
            "wall_s": round(time.perf_counter() - started, 1)})
    return rows


def _tokens(job: Job) -> int:
    """A job's cost in tokens: trained (steps x batch x length) plus evaluated."""
    task, profile = job.task, job.profile.for_task(job.task.name)
    trained = profile.steps * profile.batch_size * max(slice_length(task, s) for s in task.train)
    return trained + task.test_examples * sum(slice_length(task, s) for s in task.test)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_profile(profile: Profile, device: str = "cpu", workers: int = 1,
                progress: bool = True) -> list[dict]:
    """Every job of the profile; rows of all learning rates (pick with `best_rows`)."""
    jobs = [Job(task, family, d, lr, profile, device) for task in profile.tasks
            for family in profile.families for d in profile.d_models
            for lr in profile.for_task(task.name).lrs]
    # the dearest jobs first, so that no worker is left with one at the end
    jobs.sort(key=_tokens, reverse=True)
    rows: list[dict] = []
    bar = tqdm(total=len(jobs), desc="recall runs", disable=not progress)
    if workers <= 1:
        for job in jobs:
            rows += run_job(job)
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # forked OpenMP pools can deadlock
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(max(1, torch.get_num_threads() // workers),)) as pool:
            for future in as_completed([pool.submit(run_job, job) for job in jobs]):
                rows += future.result()
                bar.update()
    bar.close()
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """For each (task, model, d_model), the rows of the learning rate with the best validation
    score (ties: the smaller learning rate)."""
    chosen: dict[tuple, float] = {}
    for row in rows:
        key = (row["task"], row["model"], row["d_model"])
        current = chosen.get(key)
        if current is None or (row["validation_score"], -row["lr"]) > current:
            chosen[key] = (row["validation_score"], -row["lr"])
    return [r for r in rows if chosen[(r["task"], r["model"], r["d_model"])]
            == (r["validation_score"], -r["lr"])]


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hololm bench recall", description="Train every family and softmax attention on "
        "synthetic recall / reasoning tasks (MQAR, MQAR with forgetting, passkey to 16k, reverse, "
        "sort, copy, induction, continuous vector recall), sweep the learning rate, report the "
        "best (chosen on a validation set, scored on a test set).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="small models, every task and family (measured: 11 min on 2 CPU "
                           "cores, see the README); the default")
    size.add_argument("--full", action="store_true",
                      help="zoology's sweep sizes (T 64-512, kv 4-64, d_model 64-256, four "
                           "learning rates): hours, meant for a GPU")
    parser.add_argument("--output_dir", required=True,
                        help="folder for recall.csv, recall_sweep.csv, recall.md and the PNGs")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="only these tasks (default: all of the profile)")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"only these families or variants (default: {', '.join(MODELS)})")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="learning rates to sweep (default: the profile's)")
    parser.add_argument("--d_models", type=int, nargs="+", default=None,
                        help="model widths (default: the profile's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: the profile's)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="training batch size (default: the profile's, 64)")
    parser.add_argument("--test_examples", type=int, default=None,
                        help="test examples per slice (default: the task's, 32-1000)")
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed of data, initialisation and batch order (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel training processes (default: CPU cores on cpu, 1 on GPU)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = select(PROFILES["full" if args.full else "quick"], args.tasks, args.models,
                     test_examples=args.test_examples,
                     lrs=tuple(args.lrs) if args.lrs else None,
                     d_models=tuple(args.d_models) if args.d_models else None,
                     steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    workers = args.workers or (os.cpu_count() or 1 if args.device == "cpu" else 1)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = run_profile(profile, args.device, workers, progress=not args.no_progress)
    write_csv(rows, out / "recall_sweep.csv")
    chosen = best_rows(rows)
    write_csv(chosen, out / "recall.csv")
    command = "hololm bench recall " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {**{k: v for k, v in asdict(profile).items() if k != "tasks"},
               "tasks": [t.name for t in profile.tasks], "workers": workers}
    table = write_reports(chosen, out, summary, command.strip(), time.perf_counter() - started)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
