"""`TrainConfig`: every setting of a training run, with the original projects' flag names, read
from keyword arguments or a JSON / YAML file (parsed with a `yaml.SafeLoader`, so a config never
runs code; a key given twice in one mapping is refused, where the parsers would keep the last
silently).

Values are checked when the config is built: a wrong name, type or choice raises `ConfigError`
with one line naming the field, so a typo in a config file fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hololm.errors import ConfigError
from hololm.models.registry import NAMES, SIZES

OPTIMIZERS = ("adamw", "muon")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """One training run. Steps count optimizer updates; a step sees
    batch_size × grad_accum_steps × processes sequences of seq_len tokens."""

    # model
    model_type: str = "hologpt-delta"  # the hololm family docs/lm.md ranks best
    model_size: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # passed to the model config
    seq_len: int = 512
    # data
    dataset: str = "stdlib"
    data_dir: str | None = None
    streaming: bool = False
    max_train_tokens: int | None = None  # cap on tokens read (needed for streamed hub data)
    max_eval_tokens: int | None = 1_000_000
    tokenizer: str = "byte"  # "byte", "bpe" (trained on the dataset) or a hub/local name
    bpe_vocab_size: int = 8192
    cache_dir: str | None = None  # tokenized data and BPE tokenizers; None: the data default
    document_resets: bool = True  # hololm models: memories reset where a packed document begins
    carry_state: bool = False  # rows read contiguous streams, each window from the last's state
    # optimisation
    batch_size: int = 8  # sequences per process per micro-batch
    grad_accum_steps: int = 1
    max_steps: int = 1000
    optimizer: str = "adamw"
    lr: float = 3e-4  # AdamW's lr (for "muon": the lr of the AdamW-updated parameters)
    muon_lr: float = 0.02
    weight_decay: float = 0.0
    warmup_steps: int = 100  # see effective_warmup_steps
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    max_bad_steps: int = 3  # consecutive non-finite steps (skipped) before the run stops
    divergence_patience: int = 200  # unhealthy-loss steps in a row before the run stops; 0: off
    precision: str = "auto"  # auto: bf16 on a CUDA GPU that supports it, else fp32
    gradient_checkpointing: bool = False
    seed: int = 0
    # evaluation, logging, checkpoints
    eval_steps: int = 250
    eval_batches: int = 20  # batches of batch_size held-out windows per process
    sample_every: int | None = None  # steps between generated samples; None: at every eval
    sample_tokens: int = 64  # 0: no samples
    sample_prompt: str | None = None  # None: the first tokens of the validation text
    log_every: int = 10
    output_dir: str = "runs/hololm"
    checkpoint_dir: str | None = None  # None: <output_dir>/checkpoints
    save_steps: int = 500
    keep_checkpoints: int = 3
    resume: bool | str = False  # True: the latest checkpoint in checkpoint_dir; or a path

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        for name, choices in (("model_type", NAMES), ("model_size", tuple(SIZES)),
                              ("optimizer", OPTIMIZERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {choices}")
        for name in ("seq_len", "batch_size", "grad_accum_steps", "max_steps", "eval_steps",
                     "eval_batches", "log_every", "save_steps", "keep_checkpoints",
                     "bpe_vocab_size", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("lr", "muon_lr", "weight_decay", "warmup_steps", "grad_clip",
                     "sample_tokens", "divergence_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must not be negative")
        if self.sample_every is not None and self.sample_every < 1:
            raise ConfigError(f"sample_every={self.sample_every} must be at least 1 (or null)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping; unknown keys raise ConfigError listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: "
                              f"{', '.join(valid)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A config from a .json, .yaml or .yml file holding one mapping."""
        return cls.from_dict(read_settings(path))

    @property
    def resolved_checkpoint_dir(self) -> str:
        """checkpoint_dir, or <output_dir>/checkpoints when it is None (resolved on use, so a
        config file's output_dir overridden by a flag moves the checkpoints along)."""
        if self.checkpoint_dir is not None:
            return self.checkpoint_dir
        return str(Path(self.output_dir) / "checkpoints")

    @property
    def effective_warmup_steps(self) -> int:
        """warmup_steps, cut to a tenth of max_steps when the warmup would not end before the
        run does (the default 100 with --max_steps 20: the learning rate would never reach its
        peak). The trainer warns when it cuts; the CLI refuses such a --warmup_steps given
        explicitly."""
        if self.warmup_steps < self.max_steps:
            return self.warmup_steps
        return self.max_steps // 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings a .json, .yaml or .yml config file holds (one mapping), not yet checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    parse = _PARSERS.get(path.suffix)
    if parse is None:
        raise ConfigError(f"config file {path} must end in .json, .yaml or .yml")
    try:
        values = parse(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        problem = str(err).replace("\n", " ")
        raise ConfigError(f"config file {path} is not valid: {problem}") from None
    except _DuplicateKeyError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return values


class _DuplicateKeyError(Exception):
    """A key given twice in one mapping (read_settings adds the file's name)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping: PyYAML keeps the last, so a second
    `lr:` further down a long config would silently override the first. Keys merged in with
    `<<: *anchor` may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            # scalar keys only: they are hashable, and a config has no other kind
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _YAML_MERGE_TAG:
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise _DuplicateKeyError(f"key {key!r} is given twice, on line {lines[key]} "
                                             f"and again on line {line}")
                lines[key] = line
        return super().construct_mapping(node, deep)


_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


def _parse_yaml(text: str) -> Any:
    loader = _UniqueKeyLoader(text)  # a SafeLoader: no tag runs code
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _parse_json(text: str) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise _DuplicateKeyError(f"key {key!r} is given twice, again on line "
                                         f"{_last_line_of_key(text, key)}")
        return dict(pairs)
    return json.loads(text, object_pairs_hook=unique)


def _last_line_of_key(text: str, key: str) -> int | str:
    """The line of the last `"key":` in a JSON text (object_pairs_hook sees no positions), or
    "?" where the key is spelled with escapes."""
    found = list(re.finditer(re.escape(json.dumps(key)) + r"\s*:", text))
    return text.count("\n", 0, found[-1].start()) + 1 if found else "?"


_PARSERS = {".json": _parse_json, ".yaml": _parse_yaml, ".yml": _parse_yaml}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type, or ConfigError. Numbers written as strings are accepted
    because YAML 1.1 reads `3e-4` (no dot) as a string."""
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = list(typing.get_args(hint)) if is_union else [hint]
    if value is None and type(None) in kinds:
        return None
    kinds = [k for k in kinds if k is not type(None)]
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, int | float | str) and not isinstance(value,
                                                                                     bool):
            try:
                return float(value)
            except ValueError:
                continue
        if origin in (str, dict) and isinstance(value, origin):
            return value
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in
                           (typing.get_origin(k) or k for k in kinds))
    raise ConfigError(f"{name}={value!r} must be {expected}")
