"""Load a trained model and its tokenizer for evaluation or generation.

A checkpoint is a directory written by `save_pretrained` (config.json, model.safetensors and the
tokenizer files); the trainer writes them as `<checkpoint_dir>/step_<N>/`, so either a step
directory or the checkpoint directory (meaning its latest complete step) is accepted. Anything
missing, partial or corrupt raises `CheckpointError` with a one-line message; a trainer
checkpoint's weights and config are checked against the SHA-256 it recorded (the weights also
against the one in their own header, when trainer_state.json is gone), weights holding NaN or
inf are refused, and weights are read from safetensors only (never a pickled
pytorch_model.bin). Only the model and tokenizer are read (not the optimizer state), so
evaluating costs no more than the model's size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

import hololm.models  # noqa: F401  (registers the hololm families with the Auto classes)
from hololm.data.tokenizers import TokenizerUnavailableError, load_tokenizer
from hololm.errors import CheckpointError
from hololm.models.vocabulary import restrict_generation_to
from hololm.train.checkpoint import (
    MODEL_FILE,
    latest_checkpoint,
    no_hf_progress_bars,
    verify_checksums,
)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The model directory: `checkpoint` itself when it holds config.json, else its latest
    complete step_<N> subdirectory (as the trainer resumes from), also when given a training
    run's output_dir (whose checkpoints/ holds the steps)."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a directory")
    if (path / "config.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None and (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path / "checkpoints")
    if latest is None:
        raise CheckpointError(f"no checkpoint in {str(path)!r}: expected config.json, "
                              f"complete step_<N>/ subdirectories, or checkpoints/ holding them")
    return latest


def load_model_and_tokenizer(checkpoint: str | Path, device: str | torch.device = "cpu",
                             dtype: torch.dtype | None = None
                             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (in eval mode, on `device`, in `dtype` or as saved) and its tokenizer."""
    path = resolve_checkpoint(checkpoint)
    verify_checksums(path, (MODEL_FILE, "config.json"))
    try:  # safetensors only: a pytorch_model.bin is a pickle, never read
        with no_hf_progress_bars(), _hf_errors_only():  # its load report: see `broken`
            model, info = AutoModelForCausalLM.from_pretrained(
                path, output_loading_info=True, dtype=dtype, use_safetensors=True,
                ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load the model in {str(path)!r}: {first_line}") from None
    # from_pretrained initialises missing weights at random and only warns: a partial file
    broken = sorted(info["missing_keys"]) + [str(k[0]) for k in info["mismatched_keys"]]
    if broken:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks or mismatches {len(broken)} "
                              f"weights (first: {broken[0]})")
    # a run saved after it diverged: eval would report nan and exit 0, sampling would crash
    non_finite = _first_non_finite(model)
    if non_finite is not None:
        raise CheckpointError(f"checkpoint {str(path)!r}: weight {non_finite} holds NaN or inf "
                              f"values")
    try:
        tokenizer = load_tokenizer(str(path))
    except TokenizerUnavailableError:
        raise CheckpointError(f"checkpoint {str(path)!r} has no tokenizer files") from None
    try:
        restrict_generation_to(model, len(tokenizer))
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {err}") from None
    return model.to(device).eval(), tokenizer


def _first_non_finite(model: PreTrainedModel) -> str | None:
    """The name of the first weight (in state_dict order) holding NaN or inf, or None."""
    return next((name for name, tensor in model.state_dict().items()
                 if not torch.isfinite(tensor).all()), None)


@contextlib.contextmanager
def _hf_errors_only() -> Iterator[None]:
    """from_pretrained logs a many-line report of missing or resized weights; the one-line
    CheckpointError above says the same."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
