"""Tiny models and trainer-style checkpoints for the evaluation tests."""

import torch
from torch.optim.lr_scheduler import LambdaLR

from hololm.data.tokenizers import byte_tokenizer
from hololm.models.presets import build_model
from hololm.train.checkpoint import save_checkpoint

TOKENIZER = byte_tokenizer()
VOCAB = len(TOKENIZER)


def tiny(model_type: str = "holo", **overrides) -> torch.nn.Module:
    """Two layers, d=32 (hsn: its own tiny preset), in eval mode."""
    torch.manual_seed(0)
    kwargs = {} if model_type == "hsn" else {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, **overrides}
    return build_model(model_type, "tiny", VOCAB, 64, **kwargs).eval()


def save_step(checkpoint_dir, model, step: int, seq_len: int = 64):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(checkpoint_dir, model, TOKENIZER, optimizer,
                           LambdaLR(optimizer, lambda s: 1), sampler_state={}, step=step,
                           train_config={"seq_len": seq_len})
