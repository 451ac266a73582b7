"""`train(cfg)`: the training loop, on one CPU or GPU or on many processes through accelerate.

One step is one optimizer update over `grad_accum_steps` micro-batches per process; every
process reads its own batches (the sampler takes its rank and world size from accelerate) and
accelerate's DDP averages the gradients, so the replicas stay identical. Launch several
processes with accelerate, e.g. `accelerate launch --multi_gpu --num_processes 2 ...` (on a
machine without GPUs as well: the processes then train on CPU over gloo).

Resuming is exact: a checkpoint holds the model, optimizer, scheduler, sampler position, every
process's RNG states and the loss history, and nothing between two checkpoints draws from a
generator the training step uses (samples are drawn under `torch.random.fork_rng`), so a run
interrupted and resumed reproduces the losses of an uninterrupted one.

A step whose loss or gradient norm is non-finite (on any process) is skipped: the weights and
optimizer state stay as they were, the scheduler still advances (the step keeps its slot, so the
run ends at max_steps as planned), the step is reported on the console and logged with its
non-finite loss. `max_bad_steps` skipped steps in a row stop the run with
`TrainingDivergedError`; nothing is saved then, so the last checkpoint is the last good state.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object, parse_flag_from_env, set_seed
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from hololm.data.corpora import load_documents
from hololm.data.packing import (
    IGNORE_INDEX,
    BatchSampler,
    StreamSampler,
    TokenData,
    dataset_fingerprint,
    document_positions,
    eval_batches,
    load_token_data,
)
from hololm.data.tokenizers import get_tokenizer
from hololm.errors import ConfigError, TrainingDivergedError
from hololm.models.presets import build_model
from hololm.models.registry import BASELINES
from hololm.models.vocabulary import restrict_generation_to
from hololm.optim import build_optimizer
from hololm.train.carry import CarriedStates, check_carriable
from hololm.train.checkpoint import (
    STATE_FILE,
    Checkpoint,
    capture_rng_state,
    check_writable,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hololm.train.config import TrainConfig
from hololm.train.logging import RunLogger
from hololm.train.loss_watch import LossWatch
from hololm.train.run_lock import RunLock
from hololm.train.schedule import build_scheduler

VOCAB_MULTIPLE = 64  # embedding rows padded to a multiple of 64: faster matmuls on GPUs
# settings a resumed run must share with its checkpoint, or the weights would not fit
ARCHITECTURE_KEYS = ("model_type", "model_size", "model_overrides", "seq_len", "tokenizer",
                     "bpe_vocab_size")
ADAMW_BETAS = (0.9, 0.95)
DATA_FINGERPRINT = "dataset_fingerprint"  # in the checkpoint's sampler state
# what a resumed run cannot change: the model, its data layout, and the optimizer's state layout
FIXED_ON_RESUME = (*ARCHITECTURE_KEYS, "optimizer")
LR_FLOOR = 0.1  # the cosine decays to 10 % of the peak lr
# accelerate's launch modes that shard or partition the model, by the variable each sets
SHARDED_LAUNCHES = {"ACCELERATE_USE_FSDP": "--use_fsdp", "ACCELERATE_USE_DEEPSPEED":
                    "--use_deepspeed", "ACCELERATE_USE_MEGATRON_LM": "--use_megatron_lm"}
# what torchrun or MPI set in each process of a multi-process launch (accelerate reads the same)
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train as `cfg` says. Returns {"final_loss", "steps", "checkpoint" (path of the last
    checkpoint), "history" (one record per step: step, loss, lr, tokens_per_s, and val_loss,
    val_ppl, val_bpb at evaluations), "val_loss", "val_ppl", "val_bpb" (the last evaluation's),
    "model" (the trained model, unwrapped)}."""
    _check_launch()
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.precision),
                              gradient_accumulation_steps=cfg.grad_accum_steps,
                              cpu=_cpu_processes())
    if accelerator.num_processes > 1:
        state = accelerator.state
        accelerator.print(f"{state.num_processes} processes ({state.distributed_type.value} "
                          f"over {state.backend})")
    with ExitStack() as held:
        if accelerator.is_main_process:  # one run per directory (the other ranks are its own)
            for directory in _run_directories(cfg):
                held.enter_context(RunLock(directory))
        return _train(cfg, accelerator)


def _run_directories(cfg: TrainConfig) -> list[Path]:
    """The directories a run writes: the output dir, and the checkpoint dir when outside it."""
    out, checkpoints = Path(cfg.output_dir).resolve(), Path(cfg.resolved_checkpoint_dir).resolve()
    return [out] if checkpoints.is_relative_to(out) else [out, checkpoints]


def _train(cfg: TrainConfig, accelerator: Accelerator) -> dict[str, Any]:
    set_seed(cfg.seed)
    resume = _resume_checkpoint(cfg)
    with accelerator.main_process_first():  # the first process fills the token caches
        tokenizer, train_data, val_data = load_data(cfg)
    fingerprint = dataset_fingerprint(cfg.dataset, tokenizer, data_dir=cfg.data_dir)
    if resume is not None:
        _check_same_data(resume, fingerprint)
    try:
        model = build_model(cfg.model_type, cfg.model_size, vocab_size=padded_vocab(tokenizer),
                            seq_len=cfg.seq_len, **cfg.model_overrides)
        restrict_generation_to(model, len(tokenizer))
    except (TypeError, ValueError) as err:  # the model's config refuses an override
        raise ConfigError(f"{cfg.model_type}-{cfg.model_size} with model_overrides "
                          f"{cfg.model_overrides}: {str(err).splitlines()[0]}") from None
    if accelerator.is_main_process:  # before the first step, not at the first save
        check_writable(cfg.resolved_checkpoint_dir)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if resume is not None:
        resume.load_model_state(model)
    optimizer = build_optimizer(model, cfg.optimizer, muon_lr=cfg.muon_lr, adamw_lr=cfg.lr,
                                weight_decay=cfg.weight_decay, adamw_betas=ADAMW_BETAS)
    # not passed to accelerate.prepare: its wrapper steps the schedule once per process
    if cfg.effective_warmup_steps != cfg.warmup_steps:
        accelerator.print(f"warning: warmup_steps={cfg.warmup_steps} does not end before max_steps="
                          f"{cfg.max_steps}; warming up for {cfg.effective_warmup_steps} steps "
                          "instead (set --warmup_steps below --max_steps to choose)")
    scheduler = build_scheduler(optimizer, cfg.effective_warmup_steps, cfg.max_steps, LR_FLOOR)
    carried = None
    if cfg.carry_state:
        check_carriable(model, cfg.model_type)
        carried = CarriedStates(cfg.grad_accum_steps, len(model.config.mixer_types),
                                tokenizer.eos_token_id if cfg.document_resets else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.carry_state:
        sampler = StreamSampler(train_data, cfg.seq_len, cfg.batch_size, cfg.grad_accum_steps,
                                rank=accelerator.process_index,
                                world_size=accelerator.num_processes)
    else:
        sampler = BatchSampler(train_data, cfg.seq_len, cfg.batch_size, cfg.seed,
                               rank=accelerator.process_index,
                               world_size=accelerator.num_processes)
    history: list[dict[str, Any]] = []
    if resume is not None:
        asked = [(g["initial_lr"], g["weight_decay"]) for g in optimizer.param_groups]
        optimizer.load_state_dict(resume.optimizer_state)
        scheduler.load_state_dict(resume.scheduler_state)
        for change in _apply_changed_hyperparameters(cfg, resume.train_config, optimizer,
                                                     scheduler, asked):
            accelerator.print(f"resume: {change}")
        sampler.load_state_dict(resume.sampler_state)
        if carried is not None and resume.carried_states is not None:
            carried.load(resume.carried_states, accelerator.process_index, accelerator.device)
        history = resume.history
        restore_rng_state(resume.rng_states[accelerator.process_index % len(resume.rng_states)])
    run = _Run(cfg, accelerator, model, optimizer, scheduler, sampler, tokenizer, val_data,
               history, resume.path if resume is not None else None,
               uniform_loss=math.log(len(tokenizer)), data_fingerprint=fingerprint,
               carried=carried)
    try:
        return run.loop(resume.step if resume is not None else 0)
    finally:
        run.close()


def _check_same_data(resume: Checkpoint, fingerprint: str) -> None:
    """A resumed run must read the data it was trained on: a different corpus of the same token
    count would pass the sampler's length check and continue on other text."""
    saved = resume.sampler_state.get(DATA_FINGERPRINT) if isinstance(resume.sampler_state,
                                                                      dict) else None
    if saved is None:  # a checkpoint from before fingerprints were recorded
        print(f"resume: {resume.path} does not record its training data; not checked",
              flush=True)
    elif saved != fingerprint:
        raise ConfigError(f"resume: the training data (or tokenizer) differs from the one "
                          f"{resume.path} was trained on; resume with that data, or start a new "
                          f"run")


def _apply_changed_hyperparameters(cfg: TrainConfig, saved: dict[str, Any],
                                   optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                                   asked: list[tuple[float, float]]) -> list[str]:
    """Loading the optimizer and scheduler states restores the checkpoint's learning rates and
    weight decay; where the config now asks for others (`asked`: each param group's peak lr and
    weight decay as built from it), apply those to the restored optimizer, and the schedule's
    factor at the current step (warmup and max_steps may have changed too). Returns what
    changed, for the log; nothing changes when the config is the checkpoint's."""
    keys = ("lr", "muon_lr", "weight_decay", "warmup_steps", "max_steps")
    changes = [f"{key} {saved[key]!r} -> {getattr(cfg, key)!r} (applied to the restored "
               f"optimizer)" for key in keys if key in saved and saved[key] != getattr(cfg, key)]
    if not changes:
        return []
    for i, (group, (peak, decay)) in enumerate(zip(optimizer.param_groups, asked, strict=True)):
        scheduler.base_lrs[i] = group["initial_lr"] = peak
        group["weight_decay"] = decay
        group["lr"] = peak * scheduler.lr_lambdas[i](scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changes


def resolve_precision(precision: str) -> str:
    """accelerate's mixed_precision for a config precision: "auto" is bf16 on a CUDA GPU that
    supports it, else full fp32."""
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
            else "fp32"
    return "bf16" if precision == "bf16" else "no"


def padded_vocab(tokenizer: PreTrainedTokenizerBase) -> int:
    return math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def load_data(cfg: TrainConfig) -> tuple[PreTrainedTokenizerBase, TokenData, TokenData]:
    """The tokenizer (a BPE is trained on the training split) and the tokenized training and
    validation splits, both cached under cfg.cache_dir."""
    documents = None
    if cfg.tokenizer == "bpe":
        documents = load_documents(cfg.dataset, "train", data_dir=cfg.data_dir,
                                   streaming=cfg.streaming)
    tokenizer = get_tokenizer(cfg.tokenizer, documents=documents, cache_dir=cfg.cache_dir,
                              vocab_size=cfg.bpe_vocab_size)
    train_data, val_data = (
        load_token_data(cfg.dataset, split, tokenizer, data_dir=cfg.data_dir,
                        streaming=cfg.streaming, max_tokens=max_tokens, cache_dir=cfg.cache_dir)
        for split, max_tokens in (("train", cfg.max_train_tokens),
                                  ("validation", cfg.max_eval_tokens)))
    return tokenizer, train_data, val_data


def token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
               eos_token_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy in fp32, number of targets): token t predicts label
    t + 1; labels of IGNORE_INDEX (prompt tokens of instruction data) are no targets. With
    `eos_token_id`, the model reads each packed document alone (`document_positions`)."""
    labels = batch["labels"][:, 1:].to(device)
    input_ids = batch["input_ids"].to(device)
    extra = {} if eos_token_id is None else {
        "position_ids": document_positions(input_ids, eos_token_id)}
    logits = model(input_ids=input_ids, use_cache=False, **extra).logits[:, :-1]
    loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (labels != IGNORE_INDEX).sum()


class _Run:
    """The state of a run while it trains; `loop` does the steps."""

    def __init__(self, cfg: TrainConfig, accelerator: Accelerator, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                 sampler: BatchSampler | StreamSampler, tokenizer: PreTrainedTokenizerBase,
                 val_data: TokenData, history: list[dict[str, Any]],
                 checkpoint: Path | None, uniform_loss: float, data_fingerprint: str,
                 carried: CarriedStates | None) -> None:
        self.cfg, self.accelerator, self.model = cfg, accelerator, model
        self.carried = carried
        self.optimizer, self.scheduler, self.sampler = optimizer, scheduler, sampler
        self.tokenizer, self.val_data, self.history = tokenizer, val_data, history
        self.data_fingerprint = data_fingerprint
        # the Hugging Face baselines take position_ids but would still attend across documents
        self.eos_token_id = tokenizer.eos_token_id if cfg.document_resets \
            and cfg.model_type not in BASELINES else None
        self.tokens_per_step = (cfg.batch_size * cfg.seq_len * cfg.grad_accum_steps
                                * accelerator.num_processes)
        # eval_batches batches of batch_size windows per process: the same held-out windows
        # for any number of processes at a given global batch, each process reading its share
        world, rank = accelerator.num_processes, accelerator.process_index
        shares = ({k: v.tensor_split(world)[rank] for k, v in batch.items()}
                  for batch in eval_batches(val_data, cfg.seq_len, cfg.batch_size * world,
                                            cfg.eval_batches))
        self.eval_windows = [share for share in shares if len(share["input_ids"])]
        self.prompt = self._sample_prompt()
        self.checkpoint = checkpoint  # the last one saved (or resumed from)
        self.good_checkpoint = checkpoint  # the last one saved while the loss looked healthy
        self.watch = LossWatch(cfg.divergence_patience, uniform_loss, cfg.effective_warmup_steps)
        for record in history:
            self.watch.update(record["step"], record["loss"])
        self.logger = None
        if accelerator.is_main_process:
            start = history[-1]["step"] if history else 0
            rows = [r for r in history if self._logged(r["step"], "val_loss" in r)]
            self.logger = RunLogger(cfg.output_dir, rows, start_step=start)

    def loop(self, start: int) -> dict[str, Any]:
        cfg, accelerator = self.cfg, self.accelerator
        bar = tqdm(total=cfg.max_steps, initial=start, desc="train", dynamic_ncols=True,
                   disable=None if accelerator.is_main_process else True)
        with bar, _signals_trigger(accelerator) as self.signals:
            for step in range(start + 1, cfg.max_steps + 1):
                record = self._train_step(step)
                self._check_divergence(record)
                verdict = self.watch.update(step, record["loss"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                bar.update()
                evaluate = step % cfg.eval_steps == 0 or step == cfg.max_steps
                logged = self._logged(step, evaluate) or record.get("skipped", False)
                if bar.disable and logged:  # no bar (not a terminal): a line instead
                    self._print(f"step {step}/{cfg.max_steps}: loss {record['loss']:.4f}  lr "
                                f"{record['lr']:.2e}  {record['tokens_per_s']:.0f} tokens/s")
                if evaluate:
                    record.update(self._evaluate())
                    self._print(f"step {step}: val_loss {record['val_loss']:.4f}  val_ppl "
                                f"{record['val_ppl']:.2f}  val_bpb {record['val_bpb']:.4f}")
                if self._sample_due(step):
                    self._report_sample(step)
                self.history.append(record)
                if self.logger is not None and logged:
                    self.logger.log(record)
                    if evaluate:
                        self.logger.plot(self.history, self._title())
                interrupted = accelerator.check_trigger()  # a signal on any process, seen by all
                if interrupted or step % cfg.save_steps == 0 or step == cfg.max_steps:
                    self._save(step)
                if verdict is not None:
                    self._stop_diverged(verdict, record)
                if interrupted:
                    self._print(f"{self.signals.name}: saved {self.checkpoint}")
                    raise StoppedBySignal(self.signals.received, self.checkpoint)
        last_eval = next((r for r in reversed(self.history) if "val_loss" in r), {})
        return {"final_loss": self.history[-1]["loss"] if self.history else None,
                "steps": self.history[-1]["step"] if self.history else 0,
                "checkpoint": str(self.checkpoint), "history": self.history,
                "model": accelerator.unwrap_model(self.model),
                **{k: last_eval.get(k) for k in ("val_loss", "val_ppl", "val_bpb")}}

    def _check_divergence(self, record: dict[str, Any]) -> None:
        """Report a skipped step; after max_bad_steps in a row (counting those before a resume)
        stop with TrainingDivergedError, leaving the last checkpoint as it is."""
        if not record.get("skipped"):
            return
        bad = 1
        for earlier in reversed(self.history):
            if not earlier.get("skipped"):
                break
            bad += 1
        cfg, step = self.cfg, record["step"]
        self._print(f"step {step}: non-finite loss or gradient (loss {record['loss']}); step "
                    f"skipped, weights and optimizer state unchanged ({bad}/{cfg.max_bad_steps} "
                    f"in a row)")
        if bad >= cfg.max_bad_steps:
            self.history.append(record)
            if self.logger is not None:
                self.logger.log(record)
            last = self.checkpoint if self.checkpoint is not None else "none saved yet"
            raise TrainingDivergedError(
                f"{bad} consecutive steps ({step - bad + 1}-{step}) had a non-finite loss or "
                f"gradient: stopped; last checkpoint {last}; lower lr (now {record['lr']:.2e}), "
                f"use fp32, or check the data")

    def _stop_diverged(self, verdict: str, record: dict[str, Any]) -> None:
        good = self.good_checkpoint if self.good_checkpoint is not None else "none saved yet"
        raise TrainingDivergedError(
            f"step {record['step']}: {verdict}: stopped; the last checkpoint saved while the "
            f"loss was healthy is {good} (kept); resume from it with a lower --lr (now "
            f"{record['lr']:.2e}), or raise --divergence_patience (0 turns the check off)")

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def _train_step(self, step: int) -> dict[str, Any]:
        cfg, accelerator, model, optimizer = self.cfg, self.accelerator, self.model, self.optimizer
        start = time.perf_counter()
        lr = optimizer.param_groups[-1]["lr"]  # the AdamW group's (Muon's is muon_lr-scaled)
        total = torch.zeros((), device=accelerator.device)
        mean_loss, finite = math.nan, False
        for slot in range(cfg.grad_accum_steps):
            batch = next(self.sampler)  # this process's own batch: ranks read disjoint windows
            with accelerator.accumulate(model):
                if self.carried is None:
                    loss_sum, count = token_loss(model, batch, accelerator.device,
                                                 self.eos_token_id)
                else:
                    loss_sum, count = self.carried.loss(model, batch, slot, accelerator.device)
                loss = loss_sum / count.clamp(min=1)  # 0, not NaN, if all targets are masked
                accelerator.backward(loss)
                total += loss.detach()
                if accelerator.sync_gradients:  # the last micro-batch: gradients are complete
                    mean_loss, finite = self._reduce_and_check(total)
                    if finite:
                        optimizer.step()
                optimizer.zero_grad()  # accelerate skips it until the last micro-batch
        with warnings.catch_warnings():  # a skipped first step: torch warns, rightly here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()  # a skipped step keeps its slot in the schedule
        elapsed = time.perf_counter() - start
        record = {"step": step, "loss": mean_loss, "lr": lr,
                  "tokens_per_s": self.tokens_per_step / elapsed}
        if not finite:
            record["skipped"] = True
        return record

    def _reduce_and_check(self, total: torch.Tensor) -> tuple[float, bool]:
        """(mean loss over micro-batches and processes, whether the update is safe to apply):
        the loss and the gradient norm must be finite on every process. One all-reduce carries
        the loss and a bad-gradient flag, so all processes agree to step or to skip."""
        cfg, accelerator = self.cfg, self.accelerator
        # clipping at inf only measures the norm (the scale factor is clamped to 1)
        norm = accelerator.clip_grad_norm_(self.model.parameters(),
                                           cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        bad_grad = (~torch.isfinite(torch.as_tensor(norm, device=total.device))).float()
        stats = torch.stack([total / cfg.grad_accum_steps, bad_grad])
        loss_sum, bad = accelerator.reduce(stats, reduction="sum").tolist()
        mean_loss = loss_sum / accelerator.num_processes
        return mean_loss, math.isfinite(mean_loss) and bad == 0

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Loss over the held-out windows (each process takes its share), its perplexity and
        bits per byte: loss / (ln 2 · bytes per token of the validation text)."""
        accelerator = self.accelerator
        model = accelerator.unwrap_model(self.model)  # no DDP hooks: shares may be uneven
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for batch in self.eval_windows:
            batch_sum, batch_count = token_loss(model, batch, accelerator.device,
                                                self.eos_token_id)
            loss_sum += batch_sum
            count += batch_count
        model.train()
        loss_sum, count = accelerator.reduce(torch.stack([loss_sum, count]), reduction="sum")
        # no target among the windows (instruction data, short seq_len): nothing measured
        val_loss = (loss_sum / count).item() if count > 0 else math.nan
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0)),
                "val_bpb": val_loss / (math.log(2) * self.val_data.bytes_per_token)}

    def _sample_due(self, step: int) -> bool:
        cfg = self.cfg
        if cfg.sample_tokens == 0 or not self.accelerator.is_main_process:
            return False
        every = cfg.sample_every or cfg.eval_steps
        return step % every == 0 or step == cfg.max_steps

    def _report_sample(self, step: int) -> None:
        """Print the sample; a sample that fails is reported and training goes on (a sample is
        a glimpse, never worth the run)."""
        try:
            self._print(f"sample at step {step}: {self._sample(step)!r}")
        except Exception as err:  # noqa: BLE001  (reported with its type, not swallowed)
            self.accelerator.unwrap_model(self.model).train()
            self._print(f"sample at step {step} failed, training goes on: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    @torch.no_grad()
    def _sample(self, step: int) -> str:
        """A continuation of the fixed prompt (top-k sampling with a fixed seed), also appended
        to <output_dir>/samples.txt. The forked RNG leaves the training generators untouched."""
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        ids = torch.tensor([self.prompt], device=self.accelerator.device)
        cuda = [torch.cuda.current_device()] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.seed)
            # every prompt token is real, the end-of-text id included: an explicit mask keeps
            # generate() from reading that id as padding; the padded vocabulary rows are
            # suppressed by the model's generation config (restrict_generation_to)
            out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=self.cfg.sample_tokens, do_sample=True,
                                 top_k=50, temperature=0.8,
                                 pad_token_id=self.tokenizer.eos_token_id)
        model.train()
        text = self.tokenizer.decode(out[0].tolist())
        with open(Path(self.cfg.output_dir) / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== step {step}\n{text}\n")
        return text

    def _save(self, step: int) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        rng_states = gather_object([capture_rng_state()])  # one per process, rank order
        carried = None
        if self.carried is not None:
            carried = {name: value for part in gather_object(
                [self.carried.to_tensors(accelerator.process_index)]) for name, value in
                part.items()}
        healthy = self.watch.healthy
        if accelerator.is_main_process:
            # while the loss looks unhealthy nothing is pruned: the checkpoints from before a
            # collapse are what a user resumes from
            save_checkpoint(
                cfg.resolved_checkpoint_dir, accelerator.unwrap_model(self.model), self.tokenizer,
                self.optimizer, self.scheduler,
                {**self.sampler.state_dict(), DATA_FINGERPRINT: self.data_fingerprint}, step,
                cfg.to_dict(), history=self.history, rng_states=rng_states,
                carried_states=carried, keep=cfg.keep_checkpoints if healthy else None)
        self.checkpoint = Path(cfg.resolved_checkpoint_dir) / f"step_{step}"
        if healthy:
            self.good_checkpoint = self.checkpoint
        accelerator.wait_for_everyone()

    def _sample_prompt(self) -> list[int]:
        if self.cfg.sample_prompt is not None:
            return self.tokenizer(self.cfg.sample_prompt)["input_ids"] or [
                self.tokenizer.eos_token_id]
        return self.val_data.tokens[:16].tolist()

    def _logged(self, step: int, evaluated: bool) -> bool:
        """Whether step gets a row in log.csv: every log_every steps, evaluations, the last."""
        return step % self.cfg.log_every == 0 or evaluated or step == self.cfg.max_steps

    def _title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model_type}-{cfg.model_size} on {cfg.dataset} ({cfg.tokenizer} tokens)"

    def _print(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message)


def _resume_checkpoint(cfg: TrainConfig) -> Checkpoint | None:
    """The checkpoint `cfg.resume` names (True: the latest in checkpoint_dir; a path: that
    step directory, or the latest one under it), checked to fit the configured model."""
    if cfg.resume is False:
        return None
    path = Path(cfg.resolved_checkpoint_dir if cfg.resume is True else cfg.resume)
    if not (path / STATE_FILE).is_file():
        path = latest_checkpoint(path) or path
    if cfg.resume is True and not (path / STATE_FILE).is_file():
        # a restart script passes --resume every time, the first time included
        print(f"resume: no checkpoint in {cfg.resolved_checkpoint_dir} yet: starting fresh",
              flush=True)
        return None
    checkpoint = load_checkpoint(path)
    saved = checkpoint.train_config
    differ = [f"{k}={getattr(cfg, k)!r} (checkpoint: {saved[k]!r})" for k in FIXED_ON_RESUME
              if k in saved and saved[k] != getattr(cfg, k)]
    if differ:
        raise ConfigError(f"resume: the config differs from {path}'s: {', '.join(differ)}")
    return checkpoint


def _check_launch() -> None:
    """Refuse the `accelerate launch` modes that would not train as asked, before accelerate
    sets them up: FSDP on a CPU crashes inside accelerate, or with --fsdp_version 2 silently
    runs as plain DDP; on GPUs it would shard what hololm's checkpoints read whole."""
    for variable, flag in SHARDED_LAUNCHES.items():
        if parse_flag_from_env(variable):
            raise ConfigError(f"accelerate launch {flag} is not supported: hololm keeps the whole "
                              "model on every process (its checkpoints, exact resume and skipped "
                              "steps rely on it); use accelerate launch --multi_gpu "
                              "--num_processes N -m hololm.cli train ...")
    # accelerate's --cpu launcher starts CPU processes only through MPI (--mpirun_hostfile);
    # without it, --num_processes N > 1 (or --num_machines > 1) starts this one process alone,
    # having set MASTER_ADDR for the others
    alone = not any(name in os.environ for name in WORLD_SIZE_VARIABLES)
    if parse_flag_from_env("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ and alone:
        raise ConfigError("accelerate launch --cpu with several processes started only this one "
                          "(accelerate runs CPU processes only through MPI, --mpirun_hostfile); "
                          "use accelerate launch --multi_gpu --num_processes N -m hololm.cli "
                          "train ..., which trains on the CPU over gloo where there is no GPU")


def _cpu_processes() -> bool:
    """accelerate only sets up multi-process training on CPU when told to use the CPU: do so
    for a multi-process launch on a machine without CUDA."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


class StoppedBySignal(KeyboardInterrupt):
    """The run stopped on SIGINT or SIGTERM after saving `checkpoint`; `signum` says which (the
    command line exits with 128 + signum, as the shell does for a process a signal ends)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"stopped by {signal.Signals(signum).name}: saved {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


class _Signals:
    """The signal that asked the run to stop (None while none did)."""

    received: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "interrupted"


@contextmanager
def _signals_trigger(accelerator: Accelerator) -> Iterator[_Signals]:
    """While training, Ctrl-C (SIGINT) and SIGTERM (what schedulers, `timeout` and container
    stops send) set accelerate's trigger, checked between steps on every process: the run saves
    a consistent checkpoint, then raises StoppedBySignal. A second signal stops at once."""
    signals = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        signals.received = signum
        accelerator.set_trigger()
        for sig, old in previous.items():
            signal.signal(sig, old)
        if accelerator.is_main_process:  # os.write: safe inside a signal handler
            os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
                        f"(send it again to stop at once)\n".encode())

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield signals
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
