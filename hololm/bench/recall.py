"""Recall benchmark after zoology: train small models of every family (original and improved
settings), softmax attention and Mamba-2 on MQAR and the other synthetic tasks, sweep the learning
rate, and report the test accuracy (argmax over the whole vocabulary) of the learning rate that
did best on a validation set, against each model's recurrent state size.

    hololm bench recall --quick --output_dir runs/recall      # MQAR at one width
    hololm bench recall --standard --output_dir runs/recall   # three widths, every family
    hololm bench recall --full --device cuda --output_dir D   # zoology's grid + other tasks

Softmax attention runs first; a task it does not solve on its training slices is dropped
(`gate`). Writes recall.csv (test results of the selected learning rates), recall_sweep.csv
(every run), recall.md (the tables, opening with the command) and recall_vs_state.png (the
headline: accuracy vs state bytes), recall_vs_seq_len.png, recall_vs_kv_pairs.png. Runs are
independent jobs spread over `--workers` processes (one thread each on CPU).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hololm.bench.csv_rows import write_csv
from hololm.bench.recall_models import (
    MODELS,
    OUTSIDE,
    VectorModel,
    build_recall_model,
    state_bytes,
)
from hololm.bench.recall_profiles import PROFILES, Profile, Task, select, slice_length
from hololm.bench.recall_report import write_reports
from hololm.data.synthetic import TaskData, split_seeds


@dataclass(frozen=True)
class Job:
    task: Task
    family: str
    d_model: int
    lr: float
    profile: Profile
    device: str


def make_split(task: Task, split: str, seed: int, examples: int,
               slices: tuple[dict, ...]) -> list[TaskData]:
    """One TaskData per slice, seeded per (split, slice) so the splits never share a draw."""
    base = split_seeds(seed)[split]
    extra = {} if task.vocab_size is None else {"vocab_size": task.vocab_size}
    return [task.generate(num_examples=examples, seed=1000 * base + i, **extra, **kwargs)
            for i, kwargs in enumerate(slices)]


def _scored_outputs(model: torch.nn.Module, data: TaskData) -> torch.Tensor:
    """The outputs at the scored positions only: [n_scored, V] logits over the whole vocabulary
    (or [n_scored, F] vectors). The LM head runs on those positions alone — MQAR scores a few
    tokens per sequence, and a head over every position is a third of a small model's step."""
    scored = data.scored()
    if data.mask is not None:
        return model(data.inputs)[scored]
    out = model(input_ids=data.inputs, use_cache=False, output_hidden_states=True,
                logits_to_keep=1)
    return model.get_output_embeddings()(out.hidden_states[-1][scored])


def _loss(out: torch.Tensor, data: TaskData) -> torch.Tensor:
    target = data.targets[data.scored()]
    if data.mask is not None:
        return F.mse_loss(out.float(), target)
    return F.cross_entropy(out.float(), target)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, device: str, max_tokens: int = 2**15
             ) -> dict:
    """accuracy (scored targets right: argmax over the whole vocabulary, as zoology scores),
    sequence_accuracy (all of an example's targets right) and mse (vector tasks), over `data` in
    batches of about `max_tokens` tokens."""
    model.eval()
    vector = data.mask is not None
    batch = max(1, max_tokens // data.inputs.shape[1])
    correct = total = whole = 0
    squared = 0.0
    for start in range(0, len(data), batch):
        part = TaskData(*(t[start:start + batch].to(device) if t is not None else None
                          for t in (data.inputs, data.targets, data.mask)))
        out = _scored_outputs(model, part).float()
        scored = part.scored()
        total += scored.sum().item()
        if vector:
            squared += (out - part.targets[scored]).pow(2).mean(-1).sum().item()
            continue
        hit = torch.ones_like(scored)
        hit[scored] = out.argmax(-1) == part.targets[scored]
        correct += (hit & scored).sum().item()
        whole += hit.all(dim=1).sum().item()
    model.train()
    if vector:
        return {"accuracy": math.nan, "sequence_accuracy": math.nan, "mse": squared / total}
    return {"accuracy": correct / total, "sequence_accuracy": whole / len(data), "mse": math.nan}


def _score(result: dict) -> float:
    """Higher is better: accuracy, or −MSE for vector tasks."""
    return -result["mse"] if math.isnan(result["accuracy"]) else result["accuracy"]


def solved(result: dict, bar: float) -> bool:
    """Accuracy ≥ bar, or for vector tasks an MSE ≤ 1 − bar (predicting zero scores 1)."""
    if math.isnan(result["accuracy"]):
        return result["mse"] <= 1 - bar
    return result["accuracy"] >= bar


def _batch(slices: list[TaskData], size: int, order: torch.Generator, device: str) -> TaskData:
    """A batch from one training slice drawn at random: slices of different lengths are mixed
    across steps rather than padded into one batch, so no step pays for padding."""
    data = slices[torch.randint(len(slices), (1,), generator=order).item()]
    idx = torch.randint(len(data), (size,), generator=order)
    return TaskData(*(t[idx].to(device) if t is not None else None
                      for t in (data.inputs, data.targets, data.mask)))


def run_job(job: Job) -> list[dict]:
    """Train one (task, family, width, lr) on the task's mixture of training slices and evaluate
    it on every test slice (training slices and the longer test-only ones)."""
    task, profile = job.task, job.profile.for_task(job.task.name)
    torch.manual_seed(profile.seed)
    vector = task.vocab_size is None
    started = time.perf_counter()
    train = make_split(task, "train", profile.seed, task.train_examples // len(task.train),
                       task.train)
    valid = make_split(task, "validation", profile.seed, profile.validation_examples,
                       task.train)
    lm = build_recall_model(job.family, task.vocab_size or 2, job.d_model, profile.n_layers,
                            task.max_len, profile.matrix_dim)
    model = VectorModel(lm, train[0].inputs.shape[-1], train[0].targets.shape[-1]) \
        if vector else lm
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
    step = 0
    while step < steps:
        batch = _batch(train, profile.batch_size, order, job.device)
        loss = _loss(_scored_outputs(model, batch), batch)
        if not torch.isfinite(loss):
            break  # diverged at this learning rate: score what the model had
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        step += 1
        # stop once every training slice is solved on validation
        if step % profile.eval_every == 0 and all(
                solved(evaluate(model, v, job.device), profile.target_accuracy) for v in valid):
            break
    # the learning rate is chosen on the mean validation score over the training slices
    validation = sum(_score(evaluate(model, v, job.device)) for v in valid) / len(valid)
    longest = max(slice_length(task, s) for s in task.test)
    rows = []
    for kwargs, data in zip(task.test, make_split(task, "test", profile.seed, task.test_examples,
                                                  task.test), strict=True):
        seq_len = slice_length(task, kwargs)
        rows.append({
            "task": task.name, "model": job.family, "d_model": job.d_model,
            "seq_len": seq_len, "num_kv_pairs": kwargs.get("num_kv_pairs", kwargs.get(
                "num_pairs", "")), "train_slice": kwargs in task.train,
            **evaluate(model, data, job.device),
            "state_bytes": state_bytes(lm, seq_len), "state_bytes_longest": state_bytes(
                lm, longest), "params": params, "lr": job.lr,
            "steps": step, "validation_score": validation,
            "train_seq_len": max(slice_length(task, s) for s in task.train),
            "wall_s": round(time.perf_counter() - started, 1)})
    return rows


def _tokens(job: Job) -> int:
    """A job's cost in tokens: trained (steps x batch x mean slice length) plus evaluated."""
    task, profile = job.task, job.profile.for_task(job.task.name)
    mean_len = sum(slice_length(task, s) for s in task.train) / len(task.train)
    return int(profile.steps * profile.batch_size * mean_len
               + task.test_examples * sum(slice_length(task, s) for s in task.test))


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _jobs(profile: Profile, device: str, families: tuple[str, ...], tasks: tuple[Task, ...],
          swept: bool = True) -> list[Job]:
    """The jobs of `families` on `tasks`, the dearest first so that no worker is left with one at
    the end; the Hugging Face models skip the vector tasks. `swept`: every learning rate at the
    widths where the profile sweeps (all of them, or `sweep_d_model` alone); else nothing — the
    other widths wait for `_carried`."""
    jobs = [Job(task, family, d, lr, profile, device) for task in tasks for family in families
            if not (task.vocab_size is None and family in OUTSIDE)
            for d in _sweep_widths(profile.for_task(task.name)) if swept
            for lr in profile.for_task(task.name).lrs]
    return sorted(jobs, key=_tokens, reverse=True)


def _sweep_widths(profile: Profile) -> tuple[int, ...]:
    if profile.sweep_d_model is None:
        return profile.d_models
    return (profile.sweep_d_model,)


def _carried(profile: Profile, device: str, rows: list[dict]) -> list[Job]:
    """With `sweep_d_model` set: each (task, model) that was swept there, at the profile's other
    widths, trained with the learning rate its sweep chose."""
    tasks = {t.name: t for t in profile.tasks}
    jobs = []
    for r in best_rows(rows):
        settings = profile.for_task(r["task"])
        if settings.sweep_d_model is None or r["d_model"] != settings.sweep_d_model \
                or not r["train_slice"]:
            continue
        jobs += [Job(tasks[r["task"]], r["model"], d, r["lr"], profile, device)
                 for d in settings.d_models if d != settings.sweep_d_model]
    unique = {(j.task.name, j.family, j.d_model): j for j in jobs}
    return sorted(unique.values(), key=_tokens, reverse=True)


def gate(rows: list[dict], profile: Profile) -> dict[str, str]:
    """Tasks the reference (softmax attention) does not solve on its training slices within the
    profile's budget, with the note the report prints: a task attention fails in this budget
    cannot tell the memories apart, so it is dropped."""
    dropped = {}
    chosen = best_rows(rows)
    for task in profile.tasks:
        widths: dict[int, list[dict]] = defaultdict(list)
        for r in chosen:
            if r["task"] == task.name and r["train_slice"]:
                widths[r["d_model"]].append(r)
        if not widths:
            continue
        # attention's best width: the one whose worst training slice scores highest
        d = max(widths, key=lambda w: min(_score(r) for r in widths[w]))
        if all(solved(r, profile.gate) for r in widths[d]):
            continue
        reached = ", ".join(f"T={r['seq_len']} kv={r['num_kv_pairs']}: " + (
            f"MSE {r['mse']:.3f}" if math.isnan(r["accuracy"]) else f"{100 * r['accuracy']:.1f} %")
            for r in widths[d])
        dropped[task.name] = (
            f"dropped: softmax attention reached {reached} on its training slices (d={d}, "
            f"{widths[d][0]['steps']} steps), short of the {100 * profile.gate:g} % bar, so in "
            f"this budget the task cannot tell the memories apart")
    return dropped


def run_profile(profile: Profile, device: str = "cpu", workers: int = 1,
                progress: bool = True) -> tuple[list[dict], dict[str, str]]:
    """Every job of the profile: rows of all learning rates (pick with `best_rows`), and the
    tasks dropped by the gate with why. With `attention` among the families and a gate set,
    attention runs first and the other families run only the tasks it solves."""
    reference = ("attention",) if profile.gate and "attention" in profile.families else ()
    others = tuple(f for f in profile.families if f not in reference)
    first = _jobs(profile, device, reference, profile.tasks)
    # the total is exact once the gate has run; until then, every task as if kept
    widths = sum(len(profile.for_task(t.name).d_models) for t in profile.tasks)
    swept = sum(len(_sweep_widths(profile.for_task(t.name))) for t in profile.tasks)
    bar = tqdm(total=len(first) + len(_jobs(profile, device, others, profile.tasks))
               + (widths - swept) * len(profile.families), desc="recall runs",
               disable=not progress)
    pool = None if workers <= 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),  # forked OpenMP can deadlock
        initializer=_init_worker, initargs=(max(1, torch.get_num_threads() // workers),))

    def run(jobs: list[Job]) -> list[dict]:
        rows: list[dict] = []
        if pool is None:
            for job in jobs:
                rows += run_job(job)
                bar.update()
            return rows
        for future in as_completed([pool.submit(run_job, job) for job in jobs]):
            rows += future.result()
            bar.update()
        return rows

    try:
        rows = run(first)
        dropped = gate(rows, profile) if reference else {}
        kept = tuple(t for t in profile.tasks if t.name not in dropped)
        rest = _jobs(profile, device, others, kept)
        rows += run(rest + [j for j in _carried(profile, device, rows) if j.task in kept])
        done = {(r["task"], r["model"], r["d_model"]) for r in rows}
        later = [j for j in _carried(profile, device, rows) if j.task in kept
                 and (j.task.name, j.family, j.d_model) not in done]
        bar.total = bar.n + len(later)
        bar.refresh()
        rows += run(later)
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    return rows, dropped


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hololm bench recall", description="Train every hololm family (original and "
        "improved settings), softmax attention and Mamba-2 on zoology's MQAR and the other "
        "synthetic tasks; sweep the learning rate, keep the best on a validation set, report the "
        "test set, and plot accuracy against recurrent state size. A task softmax attention does "
        "not solve in the profile's budget is dropped (with a note in recall.md).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="MQAR (vocabulary 256, train 32/2 + 64/4, test to 128/16) at width "
                           "64 for holo, holo-conv, hologpt, hologpt-delta, attention and "
                           "mamba2, two learning rates, <= 3,000 steps: ~15 min on 2 free CPU "
                           "cores (docs/recall.md); the default")
    size.add_argument("--standard", action="store_true",
                      help="the quick profile's MQAR at widths 16, 32 and 64 for every family's "
                           "original and improved settings, "
                           "attention and mamba2; three learning rates swept at width 64, the "
                           "chosen one carried to the other widths; <= 3,000 steps: ~90 min on "
                           "2 free CPU cores (docs/recall.md)")
    size.add_argument("--full", action="store_true",
                      help="zoology's grid (vocabulary 8192, train to 256/64, test to 1024/256, "
                           "widths 64-512, four learning rates) and the other tasks (passkey, "
                           "induction, reverse, sort, copy, forgetting, vector recall): hours, "
                           "meant for a GPU")
    parser.add_argument("--output_dir", required=True,
                        help="folder for recall.csv, recall_sweep.csv, recall.md and the PNGs")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="only these tasks (default: all of the profile)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="only these families, variants or mamba2 (default: the profile's; "
                             f"any of {', '.join(MODELS)}); without attention no task is "
                             "gated")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="learning rates to sweep (default: the profile's)")
    parser.add_argument("--d_models", type=int, nargs="+", default=None,
                        help="model widths, the state-size axis (default: the profile's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="most training steps per run; a run stops early once every "
                             "training slice is solved on validation (default: the profile's)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="training batch size (default: the profile's)")
    parser.add_argument("--test_examples", type=int, default=None,
                        help="test examples per slice (default: the task's)")
    parser.add_argument("--gate", type=float, default=None,
                        help="accuracy attention must reach on every training slice for a task "
                             "to be kept (default 0.99; 0 keeps every task)")
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed of data, initialisation and batch order (default 0)")
    parser.add_argument("--matrix_dim", type=int, default=None,
                        help="side of the square memories of hologpt and its variants, a divisor "
                             "of every width (default: the family's, min(64, width)): their "
                             "state is width x matrix_dim numbers per layer")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel training processes (default: CPU cores on cpu, 1 on GPU)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = "full" if args.full else "standard" if args.standard else "quick"
    profile = select(PROFILES[name], args.tasks, args.models,
                     test_examples=args.test_examples,
                     lrs=tuple(args.lrs) if args.lrs else None,
                     d_models=tuple(args.d_models) if args.d_models else None,
                     steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                     gate=args.gate, matrix_dim=args.matrix_dim)
    workers = args.workers or (os.cpu_count() or 1 if args.device == "cpu" else 1)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, dropped = run_profile(profile, args.device, workers, progress=not args.no_progress)
    write_csv(rows, out / "recall_sweep.csv")
    chosen = best_rows(rows)
    write_csv(chosen, out / "recall.csv")
    command = "hololm bench recall " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {**{k: v for k, v in asdict(profile).items() if k != "tasks"},
               "profile": name, "tasks": [t.name for t in profile.tasks], "workers": workers}
    table = write_reports(chosen, out, summary, command.strip(), time.perf_counter() - started,
                          dropped)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
