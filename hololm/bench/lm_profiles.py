"""The profiles of `hololm bench lm`: corpora with their tokenizers, model size, training length
and the learning rates swept. `--quick` and `--standard` run offline on a CPU; `--full` is for a
GPU with the hub's WikiText-103 and the GPT-2 tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hololm.bench.lm_models import DEFAULT_MODELS
from hololm.errors import ConfigError


@dataclass(frozen=True)
class Corpus:
    dataset: str  # a name of hololm.data.corpora
    tokenizer: str  # "byte", "bpe" (trained offline on the training split) or a hub name
    bpe_vocab_size: int = 4096

    @property
    def label(self) -> str:
        if self.tokenizer == "bpe":
            return f"{self.dataset} (BPE {self.bpe_vocab_size})"
        return f"{self.dataset} ({self.tokenizer})"


CORPORA = {
    "shakespeare": Corpus("shakespeare", "byte"),
    "stdlib": Corpus("stdlib", "bpe", 4096),
    "wikitext-103": Corpus("wikitext-103", "gpt2"),
}


@dataclass(frozen=True)
class Profile:
    name: str
    use: str  # where it runs, for --help
    corpora: tuple[str, ...]
    models: tuple[str, ...]
    target_params: int  # non-embedding parameters every candidate is matched to
    depth: int  # layers tried first when matching
    width_step: int  # widths tried when matching: multiples of this
    head_dim: int  # channels per head (heads = width / head_dim)
    seq_len: int
    batch_size: int
    steps: int
    warmup_steps: int
    lrs: tuple[float, ...]
    select_tokens: int  # held-out tokens the learning rate is chosen on
    eval_tokens: int  # test tokens scored per context length
    length_multiples: tuple[int, ...]  # context lengths scored, in units of seq_len
    decode_context: int  # decode tokens/s is measured after this many tokens
    decode_steps: int
    eval_batch_size: int
    max_train_tokens: int | None = None  # cap on the training tokens read (hub corpora)
    carry_state: bool = False  # also train each pure-memory candidate with carried state
    max_documents: int = 20  # whole held-out documents scored where carry_state

    @property
    def longest(self) -> int:
        """The longest test length in tokens."""
        return self.seq_len * max(self.length_multiples)


# hsn is left out of --quick: HSN's layers are small, so at matched parameters it is ~6x wider
# than the rest, and its vocabulary projection made it the slowest candidate by 3-5x
QUICK = Profile(
    name="quick", use="offline, for a 2-core CPU (the default)", corpora=("shakespeare", "stdlib"),
    models=("holo", "holo-conv", "holo-decay", "long", "hologpt", "hologpt-delta",
            "holo-hybrid", "long-hybrid", "llama", "gpt2", "mamba2"),
    target_params=500_000, depth=4, width_step=16, head_dim=16, seq_len=128, batch_size=8,
    steps=200, warmup_steps=20, lrs=(1e-3, 3e-3), select_tokens=32_768, eval_tokens=100_000,
    length_multiples=(1, 4, 16), decode_context=1024, decode_steps=32, eval_batch_size=8)

# sized from the quick runs on the idle 2-core CPU (5.9 min Shakespeare, 9.5 min stdlib): twice
# the parameters, twice the window, all 15 candidates; 300 steps projected to ~2.6 h (aim: 2 h)
STANDARD = replace(
    QUICK, name="standard", use="offline, CPU", models=DEFAULT_MODELS, target_params=1_000_000,
    seq_len=256, steps=200, warmup_steps=20, select_tokens=65_536)

FULL = replace(
    QUICK, name="full", use="a GPU (WikiText-103 and the GPT-2 tokenizer download once)",
    corpora=("wikitext-103",), models=DEFAULT_MODELS, target_params=85_000_000, depth=12,
    width_step=64, head_dim=64, seq_len=1024, batch_size=32, steps=10_000, warmup_steps=1000,
    lrs=(3e-4, 6e-4, 1.2e-3), select_tokens=1_000_000, eval_tokens=1_000_000, decode_steps=128,
    eval_batch_size=4)

PROFILES = {p.name: p for p in (QUICK, STANDARD, FULL)}


def describe(profile: Profile) -> str:
    return (f"~{profile.target_params / 1e6:g}M non-embedding parameters, {profile.depth} "
            f"layers, seq {profile.seq_len}, batch {profile.batch_size}, {profile.steps} steps, "
            f"learning rates {', '.join(f'{lr:g}' for lr in profile.lrs)}, "
            f"{' and '.join(CORPORA[c].label for c in profile.corpora)}, "
            f"{len(profile.models)} candidates; {profile.use}")


def customise(profile: Profile, **changes) -> Profile:
    """`profile` with the given fields replaced (None: kept); ConfigError on a bad value. Fewer
    steps than the profile's warmup, with no warmup given, warm up for a tenth of them (as the
    trainer does)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    profile = replace(profile, **changes)
    if "warmup_steps" not in changes and profile.warmup_steps >= profile.steps:
        profile = replace(profile, warmup_steps=profile.steps // 10)
    unknown = [c for c in profile.corpora if c not in CORPORA]
    if unknown:
        raise ConfigError(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(CORPORA)}")
    if len(profile.lrs) < 1 or any(lr <= 0 for lr in profile.lrs):
        raise ConfigError(f"learning rates must be positive, got {profile.lrs}")
    for name in ("target_params", "depth", "width_step", "head_dim", "seq_len", "batch_size",
                 "steps", "select_tokens", "eval_tokens", "decode_context", "decode_steps",
                 "eval_batch_size", "max_documents"):
        if getattr(profile, name) < 1:
            raise ConfigError(f"{name}={getattr(profile, name)} must be at least 1")
    if profile.warmup_steps >= profile.steps:
        raise ConfigError(f"warmup_steps={profile.warmup_steps} must be less than steps="
                          f"{profile.steps}")
    return profile
