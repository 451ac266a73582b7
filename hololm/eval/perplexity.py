"""Held-out loss, perplexity and bits per byte as a function of context length.

For each context length L the token stream is cut into non-overlapping windows of L + 1 tokens
(L inputs, their L next-token targets); the loss is the mean next-token negative log-likelihood
over every position of every window, so it falls with L as far as the model uses its context —
evaluating past the training length (train on 4k, evaluate on 16k) shows whether it
extrapolates. Bits per byte = loss / ln 2 / (UTF-8 bytes per token), comparable across
tokenizers.

`chunk_size` evaluates long windows in streaming mode for hololm models: the window goes through
the model chunk by chunk, carried by the recurrent `HoloCache`, so activations and logits stay
bounded by the chunk (holographic memories are constant-size; attention layers keep a KV cache).
The result equals one full forward pass; other models always take the full pass.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from hololm.data.packing import document_positions, load_token_data
from hololm.errors import ConfigError
from hololm.eval.checkpoints import load_model_and_tokenizer, resolve_checkpoint
from hololm.models.cache import cache_argument, cache_of
from hololm.models.modeling import HoloLMForCausalLM

DEFAULT_CONTEXT_LENGTHS = (256, 512, 1024, 2048, 4096)
COLUMNS = ("context_length", "mode", "windows", "tokens", "loss", "loss_se", "perplexity",
           "bits_per_byte")


def _windows(tokens: torch.Tensor, length: int, max_windows: int | None,
             tokens_per_length: int | None = None) -> torch.Tensor:
    """Indices [N, length + 1] of non-overlapping windows (consecutive windows share no
    target): all that fit, at most `max_windows`, and no more than cover `tokens_per_length`
    targets."""
    count = (tokens.numel() - 1) // length
    if max_windows is not None:
        count = min(count, max_windows)
    if tokens_per_length is not None:
        count = min(count, -(-tokens_per_length // length))
    if count == 0:
        raise ConfigError(f"context length {length} needs at least {length + 1} held-out tokens, "
                          f"got {tokens.numel()}")
    return (torch.arange(count) * length)[:, None] + torch.arange(length + 1)


def _nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed NLL per row [B] (float64) of targets [B, L] (-100 = not scored)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                          reduction="none")
    return nll.view(targets.shape).sum(1, dtype=torch.float64).cpu()


def _window_nll(model: PreTrainedModel, inputs: torch.Tensor, targets: torch.Tensor,
                chunk_size: int | None, eos_token_id: int | None = None) -> torch.Tensor:
    """Summed NLL per window [B] of `targets` [B, L] (-100 = not scored) after `inputs` [B, L],
    in one pass or in chunks of `chunk_size` carried by the cache; with `eos_token_id`, each
    packed document of a window is read alone (`document_positions`)."""
    positions = None if eos_token_id is None else document_positions(inputs, eos_token_id)
    if chunk_size is None or inputs.shape[1] <= chunk_size:
        extra = {} if positions is None else {"position_ids": positions}
        return _nll_sum(model(input_ids=inputs, use_cache=False, **extra).logits, targets)
    total, cache, argument = 0.0, None, cache_argument(model)
    for start in range(0, inputs.shape[1], chunk_size):
        piece = slice(start, start + chunk_size)
        extra = {} if positions is None else {"position_ids": positions[:, piece]}
        out = model(input_ids=inputs[:, piece], use_cache=True, **extra,
                    **({argument: cache} if cache is not None else {}))
        total += _nll_sum(out.logits, targets[:, piece])
        cache = cache_of(out)
    return total


def _standard_error(sums: torch.Tensor, counts: torch.Tensor) -> float:
    """Standard error of the token-weighted mean loss Σ sums / Σ counts over windows (the ratio
    estimator: windows are the independent units, tokens within one are not); NaN for one
    window."""
    k = sums.numel()
    if k < 2:
        return math.nan
    loss = sums.sum() / counts.sum()
    residual = sums - loss * counts
    return float((residual.square().sum() / (k * (k - 1))).sqrt() / counts.mean())


@torch.no_grad()
def evaluate_perplexity(model: PreTrainedModel, tokens: torch.Tensor,
                        context_lengths: Sequence[int], *, batch_size: int = 1,
                        max_windows: int | None = None, tokens_per_length: int | None = None,
                        bytes_per_token: float | None = None, chunk_size: int | None = None,
                        loss_mask: torch.Tensor | None = None,
                        eos_token_id: int | None = None) -> list[dict]:
    """One row per context length: context_length, mode ("full" or "streaming"), windows,
    tokens (targets scored), loss (nats/token) and its standard error over windows, perplexity,
    bits_per_byte (None without `bytes_per_token`). `tokens` is a 1-D tensor of token ids; per
    length, as many windows as fit, at most `max_windows` and enough for `tokens_per_length`
    targets, `batch_size` at a time; `loss_mask` (1-D bool, as `TokenData`'s) scores only the
    tokens where it is True. `eos_token_id` (hololm models): the documents packed in a window
    are read apart, as a model trained with document resets was."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if loss_mask is not None and loss_mask.shape != tokens.shape:
        raise ValueError(f"loss_mask has shape {tuple(loss_mask.shape)}, tokens "
                         f"{tuple(tokens.shape)}")
    for name, value in (("batch_size", batch_size), ("max_windows", max_windows),
                        ("tokens_per_length", tokens_per_length),
                        ("chunk_size", chunk_size), *(("context length", n)
                                                      for n in context_lengths)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if bytes_per_token is not None and not bytes_per_token > 0:
        raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    # absolute position tables (GPT-2) cannot go past their size; RoPE and hololm models can
    limit = getattr(model.config, "n_positions", None)
    too_long = [n for n in context_lengths if limit is not None and n > limit]
    if too_long:
        raise ConfigError(f"context lengths {too_long} exceed the model's {limit} positions")
    streaming = chunk_size is not None and isinstance(model, HoloLMForCausalLM)
    device = next(model.parameters()).device
    tokens = tokens.long()
    rows = []
    for length in context_lengths:
        index = _windows(tokens, length, max_windows, tokens_per_length)
        sums, counts = [], []
        for batch in index.split(batch_size):
            windows = tokens[batch]
            targets = windows[:, 1:].clone()
            if loss_mask is not None:
                targets[~loss_mask[batch[:, 1:]]] = -100
            counts.append((targets != -100).sum(1, dtype=torch.float64))
            sums.append(_window_nll(model, windows[:, :-1].to(device), targets.to(device),
                                    chunk_size if streaming else None,
                                    eos_token_id if isinstance(model, HoloLMForCausalLM)
                                    else None))
        sums, counts = torch.cat(sums), torch.cat(counts)
        count = int(counts.sum())
        if count == 0:
            raise ConfigError(f"no scored tokens in the windows of context length {length}")
        loss = float(sums.sum()) / count
        rows.append({
            "context_length": length,
            "mode": "streaming" if streaming and length > chunk_size else "full",
            "windows": index.shape[0],
            "tokens": count,
            "loss": loss,
            "loss_se": _standard_error(sums, counts),
            "perplexity": math.exp(min(loss, 700.0)),  # exp overflows past ~709
            "bits_per_byte": (loss / math.log(2) / bytes_per_token
                              if bytes_per_token is not None else None),
        })
    return rows


@torch.no_grad()
def evaluate_documents(model: PreTrainedModel, tokens: torch.Tensor, eos_token_id: int,
                       min_length: int, *, max_documents: int | None = None,
                       chunk_size: int | None = None, bytes_per_token: float | None = None,
                       loss_mask: torch.Tensor | None = None) -> dict:
    """The loss over whole held-out documents: each document of at least `min_length` tokens
    (at most `max_documents`, in order) read from its first token to its end-of-text in one
    pass, or through the cache in chunks of `chunk_size` (hololm models). A row like
    `evaluate_perplexity`'s, its context_length the documents' mean length and mode
    "documents"; the standard error is over documents."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    ends = (tokens == eos_token_id).nonzero().flatten()  # each document's end-of-text
    starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    spans = [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if b - a >= min_length]
    spans = spans[:max_documents]
    if not spans:
        raise ConfigError(f"no held-out document has {min_length} tokens or more")
    streaming = chunk_size is not None and isinstance(model, HoloLMForCausalLM)
    device = next(model.parameters()).device
    sums, counts = [], []
    for first, end in spans:
        document = tokens[first:end + 1].long()[None]  # [1, n + 1]: its tokens, then EOS
        targets = document[:, 1:].clone()
        if loss_mask is not None:
            targets[~loss_mask[first + 1:end + 1][None]] = -100
        counts.append((targets != -100).sum(1, dtype=torch.float64))
        sums.append(_window_nll(model, document[:, :-1].to(device), targets.to(device),
                                chunk_size if streaming else None))
    sums, counts = torch.cat(sums), torch.cat(counts)
    loss = float(sums.sum() / counts.sum())
    return {"context_length": round(sum(b - a for a, b in spans) / len(spans)),
            "mode": "documents", "windows": len(spans), "tokens": int(counts.sum()),
            "loss": loss, "loss_se": _standard_error(sums, counts),
            "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_byte": (loss / math.log(2) / bytes_per_token
                              if bytes_per_token is not None else None)}


def write_csv(rows: Iterable[dict], path: str | Path) -> Path:
    """The rows as CSV with `COLUMNS` first (then any extra keys, e.g. a label)."""
    rows = list(rows)
    extra = [key for row in rows for key in row if key not in COLUMNS]
    fields = [*COLUMNS, *dict.fromkeys(extra)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_perplexity(rows: Iterable[dict], path: str | Path, *, metric: str = "loss",
                    train_context: int | None = None, title: str | None = None) -> Path:
    """PNG of `metric` ("loss", "perplexity" or "bits_per_byte") against context length on a
    log-2 x axis; one line per distinct row "label" (rows without one form a single line), and
    a dashed vertical line at `train_context` when given."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    if metric not in ("loss", "perplexity", "bits_per_byte"):
        raise ValueError(f"metric must be loss, perplexity or bits_per_byte, got {metric!r}")
    lines: dict[str, list[dict]] = {}
    for row in rows:
        lines.setdefault(str(row.get("label", "")), []).append(row)
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for label, points in lines.items():
            points = sorted(points, key=lambda r: r["context_length"])
            ax.plot([r["context_length"] for r in points], [r[metric] for r in points],
                    marker="o", label=label or None)
        if train_context is not None:
            ax.axvline(train_context, color="grey", linestyle="--", label="training context")
        ax.set_xscale("log", base=2)
        lengths = sorted({r["context_length"] for points in lines.values() for r in points})
        ax.set_xticks(lengths, labels=[str(n) for n in lengths])  # 4096, not 2^12
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel({"loss": "loss (nats/token)", "perplexity": "perplexity",
                       "bits_per_byte": "bits per byte"}[metric])
        if metric == "perplexity":
            ax.set_yscale("log")
        if title:
            ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def evaluate_checkpoint(checkpoint: str | Path, dataset: str, split: str = "validation",
                        context_lengths: Sequence[int] = DEFAULT_CONTEXT_LENGTHS, *,
                        data_dir: str | None = None, streaming: bool = False,
                        max_tokens: int | None = None, batch_size: int = 1,
                        max_windows: int | None = None, tokens_per_length: int | None = None,
                        chunk_size: int | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        output_dir: str | Path | None = None,
                        documents: int | None = None,
                        max_documents: int | None = None) -> list[dict]:
    """`evaluate_perplexity` of a checkpoint (a step directory, or a checkpoint directory:
    its latest step) on the held-out split of `dataset`, tokenized with the checkpoint's own
    tokenizer. Without `max_tokens`, only the tokens the windows can need are read when
    `max_windows` or `tokens_per_length` is given, else the whole split. With
    `output_dir`, also writes perplexity.csv and perplexity.png (loss against context length,
    the training length marked when the checkpoint records it). A checkpoint trained with
    document resets reads the documents packed in a window apart. `documents`: a last row
    scores whole held-out documents of at least that many tokens, the first `max_documents`
    of them (`evaluate_documents`; the whole split is read)."""
    model, tokenizer = load_model_and_tokenizer(checkpoint, device, dtype)
    trained = training_config(resolve_checkpoint(checkpoint))
    eos = tokenizer.eos_token_id if trained.get("document_resets") else None
    if max_tokens is None and context_lengths and documents is None:
        longest = max(context_lengths)
        needed = [n for n in (max_windows and longest * max_windows,
                              tokens_per_length and tokens_per_length + longest) if n]
        max_tokens = min(needed) + 1 if needed else None
    data = load_token_data(dataset, split, tokenizer, data_dir=data_dir, streaming=streaming,
                           max_tokens=max_tokens, cache_dir=cache_dir)
    rows = evaluate_perplexity(model, data.tokens, context_lengths, batch_size=batch_size,
                               max_windows=max_windows, tokens_per_length=tokens_per_length,
                               bytes_per_token=data.bytes_per_token,
                               chunk_size=chunk_size, loss_mask=data.loss_mask,
                               eos_token_id=eos)
    if documents is not None:
        rows.append(evaluate_documents(model, data.tokens, tokenizer.eos_token_id, documents,
                                       max_documents=max_documents, chunk_size=chunk_size,
                                       bytes_per_token=data.bytes_per_token,
                                       loss_mask=data.loss_mask))
    if output_dir is not None:
        output_dir = Path(output_dir)
        write_csv(rows, output_dir / "perplexity.csv")
        plot_perplexity([r for r in rows if r["mode"] != "documents"],
                        output_dir / "perplexity.png",
                        train_context=training_context(resolve_checkpoint(checkpoint)),
                        title=f"{dataset} ({split})")
    return rows


def training_config(step_dir: Path) -> dict:
    """The TrainConfig a trainer checkpoint records (trainer_state.json), or {} for a model
    saved otherwise."""
    try:
        state = json.loads((step_dir / "trainer_state.json").read_text(encoding="utf-8"))
        return dict(state["train_config"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def training_context(step_dir: Path) -> int | None:
    """The seq_len a trainer checkpoint was trained with, if it records one."""
    try:
        return int(training_config(step_dir)["seq_len"])
    except (KeyError, TypeError, ValueError):
        return None
