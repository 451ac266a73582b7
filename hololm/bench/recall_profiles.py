"""What the recall benchmark runs: each task's training mixture and test slices, and three
profiles — `quick` (MQAR at one width, six models), `standard` (MQAR at three widths, every
family's original and improved settings; the learning rate swept at the middle width) and `full`
(zoology's grid and the other tasks, for a GPU); docs/recall.md gives their measured CPU cost. MQAR
follows zoology: the whole-vocabulary argmax, a mixture of (T, pairs) training slices, test-only
slices up to 4x longer, a swept learning rate.
Every task is gated on softmax attention: a task it does not solve in the profile's budget is
dropped (see `recall.gate`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hololm.bench.recall_models import KNOWN, MODELS
from hololm.data import synthetic
from hololm.errors import ConfigError


@dataclass(frozen=True)
class Task:
    """`train` and `test` are lists of generator keyword sets (one slice each); training draws
    each batch from one slice at random (equal shares). A test slice that is not a training
    slice is test-only (longer contexts, more pairs). `vocab_size` None = a vector task."""

    name: str
    generate: Callable[..., synthetic.TaskData]
    train: tuple[dict, ...]
    test: tuple[dict, ...]
    vocab_size: int | None
    train_examples: int
    test_examples: int = 256

    @property
    def max_len(self) -> int:
        return max(slice_length(self, s) for s in self.train + self.test)


def slice_length(task: Task, kwargs: dict) -> int:
    if "seq_len" in kwargs:
        return kwargs["seq_len"]
    return kwargs["num_pairs"] + kwargs.get("num_queries", kwargs["num_pairs"])


@dataclass(frozen=True)
class Profile:
    tasks: tuple[Task, ...]
    families: tuple[str, ...] = MODELS
    d_models: tuple[int, ...] = (64,)
    n_layers: int = 2
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    steps: int = 1000
    batch_size: int = 64
    eval_every: int = 100
    target_accuracy: float = 0.999  # stop early once every training slice's validation reaches it
    validation_examples: int = 256  # per training slice
    gate: float = 0.99  # attention must reach it on every training slice, else the task is dropped
    weight_decay: float = 0.1
    seed: int = 0
    schedule: str = "cosine"  # after the linear warmup: cosine decay to 0, or "constant"
    warmup: int | None = None  # warmup steps (None: a tenth of `steps`)
    task_overrides: dict = field(default_factory=dict)  # task name -> {field: value}
    # sweep the learning rates at this width only; the other widths train with the rate it chose
    sweep_d_model: int | None = None
    # side of the square memories of hologpt and its variants (None: the family's, min(64, d)):
    # the state-size knob of the matrix memories, as the width is for the others
    matrix_dim: int | None = None

    def __post_init__(self):
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.sweep_d_model is not None and self.sweep_d_model not in self.d_models:
            raise ConfigError(f"sweep_d_model {self.sweep_d_model} is not one of the widths "
                              f"{self.d_models}")

    def for_task(self, task: str) -> Profile:
        """The settings one task trains with: the profile's, with that task's overrides."""
        return replace(self, **self.task_overrides.get(task, {}), task_overrides={})

    @property
    def warmup_steps(self) -> int:
        return max(1, self.warmup if self.warmup is not None else self.steps // 10)


def _kv(seq_len: int, pairs: tuple[int, ...], **extra) -> tuple[dict, ...]:
    return tuple({"seq_len": seq_len, "num_kv_pairs": k, **extra} for k in pairs)


def _mqar(train: tuple[tuple[int, int], ...], test: tuple[tuple[int, int], ...], vocab_size: int,
          train_examples: int, test_examples: int, random_non_queries: bool | str = True
          ) -> Task:
    """Zoology's MQAR: training slices (T, pairs) mixed, then the test slices — the training
    ones and longer test-only ones; scored by argmax over the whole vocabulary.

    `random_non_queries="no_keys"`: in a vocabulary of 256-1024 tokens, random filler repeats a
    key before its query in ~3-5 % of queries, which held attention at 95-96 % (quick slices,
    2,500 steps); zero filler (zoology's False) left it at chance (51 % on 2 pairs after 1,500
    steps). Filler without the example's keys removes the ceiling and keeps the filler."""
    extra = {"random_non_queries": random_non_queries}
    return Task("mqar", synthetic.mqar,
                tuple({"seq_len": t, "num_kv_pairs": k, **extra} for t, k in train),
                tuple({"seq_len": t, "num_kv_pairs": k, **extra} for t, k in train + test),
                vocab_size=vocab_size, train_examples=train_examples,
                test_examples=test_examples)


def _others(scale: int) -> tuple[Task, ...]:
    """The other tasks, their lengths times `scale` (the full profile: 4); each is kept only
    where attention solves it in the profile's budget (the gate)."""
    return (
        Task("mqar_forget", synthetic.mqar_forget, _kv(48 * scale, (4 * scale,)),
             _kv(48 * scale, (4 * scale, 8 * scale)), vocab_size=1024 * scale,
             train_examples=20_000 * scale),
        Task("passkey", synthetic.passkey, ({"seq_len": 64 * scale},),
             tuple({"seq_len": n * scale} for n in (64, 256, 1024, 4096)), vocab_size=64,
             train_examples=10_000 * scale, test_examples=32),
        Task("reverse", synthetic.reverse, ({"seq_len": 32 * scale + 1},),
             ({"seq_len": 32 * scale + 1},), vocab_size=32 * scale, train_examples=20_000 * scale),
        Task("sort", synthetic.sort, ({"seq_len": 32 * scale + 1},), ({"seq_len": 32 * scale + 1},),
             vocab_size=32 * scale, train_examples=20_000 * scale),
        Task("copy", synthetic.copy, ({"seq_len": 32 * scale + 1},), ({"seq_len": 32 * scale + 1},),
             vocab_size=32 * scale, train_examples=20_000 * scale),
        Task("induction", synthetic.induction, ({"seq_len": 64 * scale},),
             tuple({"seq_len": n * scale} for n in (64, 256)), vocab_size=64,
             train_examples=20_000 * scale),
        Task("vector_recall", synthetic.vector_recall, ({"num_pairs": 16 * scale},),
             ({"num_pairs": 8 * scale}, {"num_pairs": 16 * scale}), vocab_size=None,
             train_examples=20_000 * scale),
    )


# Zoology's MQAR grid (vocabulary 8192; train 64/4, 128/8, 256/16-64; test to 512 and 1024)
FULL_MQAR = _mqar(((64, 4), (128, 8), (256, 16), (256, 32), (256, 64)),
                  ((512, 64), (512, 128), (1024, 256)), vocab_size=8192,
                  train_examples=180_000, test_examples=1000)
# 64/4 + 128/8 in a 1,024-token vocabulary held attention at 95.2 % / 96.2 % after 3,000 steps
# (width 64, best of three rates): the standard profile keeps the quick slices and adds widths
QUICK_MQAR = _mqar(((32, 2), (64, 4)), ((128, 8), (128, 16)), vocab_size=256,
                   train_examples=40_000, test_examples=256, random_non_queries="no_keys")

# Each pair of an original setting and its improvement, the references, within ~15 min
QUICK_MODELS = ("holo", "holo-conv", "hologpt", "hologpt-delta", "attention", "mamba2")
# Every family's original setting and its improved ones, the references, within ~90 min
STANDARD_MODELS = ("holo", "holo-conv", "holo-copies", "hologpt", "hologpt-delta", "long",
                   "hsn", "hsn-conv", "attention", "mamba2")

PROFILES = {
    "quick": Profile(tasks=(QUICK_MQAR,), families=QUICK_MODELS, d_models=(64,), steps=3000,
                     batch_size=32, lrs=(1e-3, 3e-3), eval_every=250),
    "standard": Profile(tasks=(QUICK_MQAR,), families=STANDARD_MODELS, d_models=(16, 32, 64),
                        sweep_d_model=64, steps=3000, batch_size=32, lrs=(5e-4, 1e-3, 3e-3),
                        eval_every=250),
    "full": Profile(tasks=(FULL_MQAR, *_others(4)), d_models=(64, 128, 256, 512),
                    lrs=tuple(10 ** x for x in (-4, -10 / 3, -8 / 3, -2)), steps=20_000,
                    batch_size=64, eval_every=500,
                    task_overrides=dict.fromkeys([t.name for t in _others(4)],
                                                 {"d_models": (128,), "steps": 5000})),
}


def select(profile: Profile, tasks: list[str] | None, families: list[str] | None,
           test_examples: int | None = None, **overrides) -> Profile:
    """`profile` restricted to the named tasks / families, with field overrides (None = keep)
    and optionally fewer (or more) test examples per slice."""
    known = {t.name for t in profile.tasks}
    for name in tasks or ():
        if name not in known:
            raise ConfigError(f"unknown task {name!r}; choose from {sorted(known)}")
    for name in families or ():
        if name not in KNOWN:
            raise ConfigError(f"unknown model {name!r}; choose from {list(KNOWN)}")
    chosen = tuple(replace(t, test_examples=test_examples or t.test_examples)
                   for t in profile.tasks if not tasks or t.name in tasks)
    fields = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in fields:  # a tenth of the new step count, unless a warmup is given too
        fields.setdefault("warmup", None)
    if profile.sweep_d_model not in fields.get("d_models", (profile.sweep_d_model,)):
        fields["sweep_d_model"] = None  # the caller's widths without it: sweep at every width
    # what the caller sets holds for every task: it replaces the tasks' own overrides
    per_task = {name: kept for name, changes in profile.task_overrides.items()
                if (kept := {k: v for k, v in changes.items() if k not in fields})}
    return replace(profile, tasks=chosen, families=tuple(families or profile.families),
                   task_overrides=per_task, **fields)
