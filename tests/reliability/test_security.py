"""Loading never runs code: weights come only from safetensors, the optimizer state through
`torch.load(weights_only=True)`, configs through json / `yaml.safe_load`, and nothing needs
`trust_remote_code`.

Two kinds of check. A scan of the package source (the AST, so comments and docstrings do not
count) finds every `torch.load` without `weights_only=True`, any pickle-family import,
`eval` / `exec`, an unsafe yaml loader, or `trust_remote_code` set to anything but False.
Then malicious pickles, whose unpickling would create a marker directory, are planted where a
checkpoint's files go: a naive loader (plain `torch.load`, or from_pretrained falling back to
`pytorch_model.bin`) runs them; ours refuses with a CheckpointError and the marker never appears.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import hololm
from hololm.data.tokenizers import byte_tokenizer
from hololm.errors import CheckpointError
from hololm.eval.checkpoints import load_model_and_tokenizer
from hololm.models.presets import build_model
from hololm.train.checkpoint import load_checkpoint, save_checkpoint

PACKAGE = Path(hololm.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib",
                  "cloudpickle"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load",
               "full_load_all", "Loader", "UnsafeLoader", "FullLoader"}


def _calls(tree: ast.AST):
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _findings(source: str, where: str) -> list[str]:
    tree = ast.parse(source, filename=where)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                found.append(f"{where}:{node.lineno}: imports a pickle-family module")
            imported = {a.name for a in node.names}
            if getattr(node, "module", None) == "yaml" and UNSAFE_YAML & imported:
                found.append(f"{where}:{node.lineno}: imports an unsafe yaml loader")
            if getattr(node, "module", None) == "torch" and "load" in imported:
                found.append(f"{where}:{node.lineno}: imports torch's load by name")
        if isinstance(node, ast.Attribute) and _dotted(node.value) == "yaml" \
                and node.attr in UNSAFE_YAML:
            found.append(f"{where}:{node.lineno}: yaml.{node.attr} (use yaml.safe_load)")
    for call in _calls(tree):
        name = _dotted(call.func)
        keywords = {k.arg: k.value for k in call.keywords}
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}:{call.lineno}: calls {name}()")
        if name.endswith("torch.load") and not _is_true(keywords.get("weights_only")):
            found.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
        if "trust_remote_code" in keywords and not (
                isinstance(keywords["trust_remote_code"], ast.Constant)
                and keywords["trust_remote_code"].value is False):
            found.append(f"{where}:{call.lineno}: trust_remote_code is set")
    for node in ast.walk(tree):  # {"trust_remote_code": True} handed on as a dict
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" \
                        and not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(f"{where}:{node.lineno}: trust_remote_code in a dict")
    return found


def test_the_scan_catches_what_it_looks_for():
    """The scanner is not vacuous: each unsafe pattern in a sample source is reported."""
    sample = ("import pickle\nimport torch, yaml\nfrom yaml import FullLoader\n"
              "from torch import load\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
              "eval('1')\nexec('x = 1')\nyaml.load('a: 1', Loader=yaml.Loader)\n"
              "f(trust_remote_code=True)\ng(**{'trust_remote_code': True})\n"
              "# torch.load('y') in a comment is fine\n")
    found = _findings(sample, "sample.py")
    for text in ("pickle-family", "unsafe yaml loader", "yaml.load", "yaml.Loader",
                 "torch's load by name", "calls eval", "calls exec",
                 "trust_remote_code is set", "trust_remote_code in a dict"):
        assert any(text in f for f in found), f"{text!r} not reported: {found}"
    assert sum("torch.load without" in f for f in found) == 2


def test_the_package_source_has_no_code_execution_paths():
    assert SOURCES, "no sources found"
    found = [f for path in SOURCES for f in
             _findings(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "\n".join(found)
    assert any("weights_only=True" in p.read_text() for p in SOURCES)  # the one torch.load


class Payload:
    """Unpickling this creates `marker`: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_model("long", "tiny", 320, 32, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long)
          ).loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return save_checkpoint(tmp_path / "checkpoints", model, byte_tokenizer(), optimizer,
                           scheduler, None, 1, {})


def test_checkpoints_hold_weights_only_as_safetensors(checkpoint):
    files = sorted(p.name for p in checkpoint.iterdir())
    assert "model.safetensors" in files
    others = [f for f in files if not f.endswith((".json", ".safetensors"))]
    assert others == ["optimizer.pt", "scheduler.pt"], files
    for name in others:  # plain tensors and numbers: loadable without unpickling any object
        torch.load(checkpoint / name, weights_only=True)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert set(state["sha256"]) >= {"model.safetensors", "config.json", "optimizer.pt"}


def _resign(step: Path, name: str) -> None:
    """An attacker who can write the directory can also rewrite its checksums."""
    state = json.loads((step / "trainer_state.json").read_text())
    state["sha256"][name] = hashlib.sha256((step / name).read_bytes()).hexdigest()
    (step / "trainer_state.json").write_text(json.dumps(state))


def test_a_pickled_optimizer_state_is_refused_without_running(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker)}, checkpoint / "optimizer.pt")
    _resign(checkpoint, "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt is corrupt"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_a_pickled_weight_file_is_refused_without_running(name, checkpoint, tmp_path):
    """As model.safetensors (not a safetensors header), or as pytorch_model.bin next to a
    removed model.safetensors (from_pretrained would fall back to unpickling it)."""
    marker = tmp_path / "pwned"
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "trainer_state.json").unlink()  # a plain save_pretrained directory
    torch.save({"model.embed_tokens.weight": Payload(marker)}, checkpoint / name)
    with pytest.raises(CheckpointError):
        load_model_and_tokenizer(checkpoint)
    assert not marker.exists()
