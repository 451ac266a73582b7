"""The Hugging Face causal-LM contract, for every family, pure and hybrid: generate (greedy,
sampling, beam with its scores) equals the cached loop, padded batches equal their rows alone,
Trainer's gradient accumulation equals the large batch, the output forms of LlamaForCausalLM,
and no keyword is accepted without being honoured."""

import pytest
import torch
from transformers import Trainer, TrainingArguments, pipeline

from hololm.data.tokenizers import byte_tokenizer
from hololm.models import inputs as model_inputs
from hololm.models.cache import cache_of
from hololm.models.vocabulary import restrict_generation_to
from tests.helpers import assert_close
from tests.models.conftest import FAMILIES, tiny_model
from tests.models.helpers import ids

ALL = FAMILIES


def build(family: str, hybrid: bool, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_model(family, hybrid, **overrides)
    with torch.no_grad():  # trained-like weights: gates, decays and phases off their init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3 * (p.std() if p.numel() > 1 else 1.0))
    return model


def _name(p) -> str:
    return f"{p[0]}-{'hybrid' if p[1] else 'pure'}"


@pytest.fixture(params=ALL, ids=_name)
def model(request):
    return build(*request.param)


def cached_loop(model, prompt: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding through the cache: (sequence [B, T + steps], logits of each step)."""
    out = model(prompt, use_cache=True)
    seq, logits = prompt, []
    for _ in range(steps):
        logits.append(out.logits[:, -1])
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        out = model(nxt, cache=cache_of(out), use_cache=True)
    return seq, torch.stack(logits, 1)


@torch.no_grad()
def test_generate_greedy_equals_cached_loop_and_full_forward(model):
    prompt = ids(2, 9, seed=2)
    out = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    loop, _ = cached_loop(model, prompt, 12)
    full = model(loop[:, :-1], use_cache=False).logits[:, 8:].argmax(-1)
    assert torch.equal(out, loop)
    assert torch.equal(full, loop[:, 9:])


@torch.no_grad()
def test_generate_sampling_equals_the_seeded_cached_loop(model):
    prompt = ids(1, 6, seed=3)
    torch.manual_seed(7)
    out = model.generate(prompt, max_new_tokens=10, do_sample=True, top_k=0, top_p=1.0,
                         temperature=1.0, pad_token_id=0)
    torch.manual_seed(7)
    seq, cache = prompt, None
    for _ in range(10):
        o = model(seq if cache is None else seq[:, -1:], cache=cache, use_cache=True)
        cache = cache_of(o)
        probs = torch.softmax(o.logits[:, -1].float(), -1)
        seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)
    assert torch.equal(out, seq)


@torch.no_grad()
def test_beam_search_scores_equal_a_recompute(model):
    prompt = ids(1, 7, seed=4)
    out = model.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0,
                         return_dict_in_generate=True, output_scores=True)
    for sequence, score in zip(out.sequences, out.sequences_scores, strict=True):
        logp = torch.log_softmax(model(sequence[None], use_cache=False).logits.float(), -1)
        new = sequence[7:]
        total = logp[0, 6:-1].gather(-1, new[:, None]).sum()
        assert torch.allclose(score, total / len(new), atol=1e-5), (score, total / len(new))


@torch.no_grad()
def test_left_padded_batch_generates_each_row_as_alone(model):
    rows = [ids(1, 11, seed=5)[0], ids(1, 4, seed=6)[0], ids(1, 8, seed=7)[0]]
    width = max(len(r) for r in rows)
    batch = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, width - len(r):], mask[i, width - len(r):] = r, 1
    out = model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False,
                         pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    scores = torch.stack(out.scores, 1)  # [B, 8, V]
    for i, r in enumerate(rows):
        alone, logits = cached_loop(model, r[None], 8)
        assert torch.equal(out.sequences[i, width:], alone[0, len(r):]), f"row {i}"
        assert_close(scores[i], logits[0], 1e-5, f"row {i} logits")


@torch.no_grad()
def test_right_padding_leaves_logits_and_state_unchanged(model):
    rows = [ids(1, 13, seed=8)[0], ids(1, 6, seed=9)[0]]
    batch = torch.zeros(2, 13, dtype=torch.long)
    mask = torch.zeros(2, 13, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, :len(r)], mask[i, :len(r)] = r, 1
    out = model(batch, attention_mask=mask, use_cache=True)
    for i, r in enumerate(rows):
        alone = model(r[None], use_cache=True)
        assert_close(out.logits[i, :len(r)], alone.logits[0], 1e-5, f"row {i} logits")
        padded, single = cache_of(out), cache_of(alone)
        for layer, (a, b) in enumerate(zip(padded.states, single.states, strict=True)):
            for key in b:
                if key in ("k", "v"):  # attention keeps the padding's entries, masked
                    a_key = a[key][i:i + 1, :, :len(r)]
                elif key == "buffer":  # the gate's grows to N - 1 inputs; zeros before start
                    extra = a[key].shape[1] - b[key].shape[1]
                    assert not a[key][i, :extra].any()
                    a_key = a[key][i:i + 1, extra:]
                else:
                    a_key = a[key][i:i + 1]
                assert_close(a_key, b[key], 1e-5, f"row {i} layer {layer} state {key}")


@torch.no_grad()
def test_return_dict_false_and_hidden_states_as_llama(model):
    x = ids(2, 10)
    loss, logits = model(x, labels=x, use_cache=False, return_dict=False)
    assert loss.dim() == 0 and logits.shape == (2, 10, model.config.vocab_size)
    assert len(model(x, labels=x, return_dict=False)) == 3  # loss, logits, cache
    out = model(x, output_hidden_states=True, use_cache=False)
    hidden = out.hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert torch.equal(hidden[0], model.model.rotary(model.get_input_embeddings()(x))
                       if model.model.rotary is not None else model.get_input_embeddings()(x))
    assert torch.allclose(model.lm_head(hidden[-1]), out.logits)
    assert model(x, use_cache=False).hidden_states is None


def test_unknown_or_unsupported_keywords_are_refused(model):
    x = ids(1, 5)
    with pytest.raises(TypeError, match="not_an_argument"):
        model(x, not_an_argument=1)
    with pytest.raises(TypeError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 5, 32))
    with pytest.raises(ValueError, match="attention weights"):
        model(x, output_attentions=True)
    cache = cache_of(model(x, use_cache=True))
    with pytest.raises(TypeError, match="not both"):
        model(x[:, :1], cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="between real tokens"):
        model(ids(1, 4), attention_mask=torch.tensor([[1, 0, 1, 1]]))


@torch.no_grad()
def test_both_cache_names_continue_a_sequence(model):
    x = ids(1, 9)
    full = model(x, use_cache=False).logits[:, -1]
    for name in ("cache", "past_key_values"):
        cache = cache_of(model(x[:, :8], use_cache=True))
        step = model(x[:, 8:], use_cache=True, **{name: cache}).logits[:, -1]
        assert_close(step, full, 1e-5, name)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, x, labels):
        self.x, self.labels = x, labels

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.labels[i]}


def _one_trainer_step(model, data, batch: int, accumulation: int, tmp_path) -> tuple[float, float]:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=1,
                             learning_rate=0.0, logging_steps=1, report_to=[], save_strategy="no",
                             use_cpu=True, dataloader_drop_last=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    log = next(e for e in trainer.state.log_history if "loss" in e)
    return log["loss"], log["grad_norm"]


def test_trainer_accumulation_equals_the_large_batch(tmp_path):
    """Micro-batches with different numbers of labelled tokens: the mean of their means would
    differ from the large batch's mean; num_items_in_batch makes them equal."""
    x = ids(8, 12, seed=10)
    labels = x.clone()
    for i in range(8):
        labels[i, : 2 + i] = -100  # 10 - i labelled targets in row i
    data = _Rows(x, labels)
    for family, hybrid in ALL:
        big = _one_trainer_step(build(family, hybrid), data, 8, 1, tmp_path / "big")
        small = _one_trainer_step(build(family, hybrid), data, 2, 4, tmp_path / "small")
        assert small[0] == pytest.approx(big[0], rel=1e-5), (family, hybrid, "loss")
        assert small[1] == pytest.approx(big[1], rel=1e-5), (family, hybrid, "grad norm")
        with torch.no_grad():  # the test can fail: the mean of the micro-batches' means differs
            model = build(family, hybrid)
            means = [model(x[i:i + 2], labels=labels[i:i + 2]).loss for i in range(0, 8, 2)]
        assert abs(torch.stack(means).mean().item() - big[0]) > 1e-4 * big[0]


@pytest.mark.parametrize("family,hybrid", ALL, ids=[_name(p) for p in ALL])
def test_text_generation_pipeline_with_a_padded_batch(family, hybrid):
    tokenizer = byte_tokenizer()
    tokenizer.padding_side = "left"
    model = build(family, hybrid, vocab_size=len(tokenizer))
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    prompts = ["To be, or not", "Hi"]
    batched = generator(prompts, batch_size=2, max_new_tokens=6, do_sample=False)
    alone = [generator(p, max_new_tokens=6, do_sample=False) for p in prompts]
    assert batched == alone


@torch.no_grad()
def test_padded_vocabulary_rows_are_never_generated():
    tokenizer = byte_tokenizer()
    model = build("holo", False, vocab_size=320)
    with torch.no_grad():  # make the padded rows the likeliest
        model.lm_head.weight[len(tokenizer):] *= 50
    restrict_generation_to(model, len(tokenizer))
    prompt = torch.tensor([tokenizer("abc")["input_ids"]])
    for kwargs in ({"do_sample": False}, {"do_sample": True, "temperature": 2.0},
                   {"num_beams": 3, "do_sample": False}):
        out = model.generate(prompt, max_new_tokens=20, pad_token_id=0, **kwargs)
        assert out.max() < len(tokenizer), kwargs
    with pytest.raises(ValueError, match="vocabulary only 320"):
        restrict_generation_to(model, 321)


@torch.no_grad()
def test_decode_step_reads_no_device_value(model, monkeypatch):
    """With the checks on an accelerator's path (asynchronous assertions), a decoding step with
    an attention mask never reads a tensor's value on the host: no GPU sync per token."""
    x = ids(2, 6)
    mask = torch.ones(2, 6, dtype=torch.long)
    out = model(x, attention_mask=mask, use_cache=True)
    monkeypatch.setattr(model_inputs, "on_host", lambda tensor: False)
    reads = []
    for name in ("item", "__bool__", "tolist", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    mask = torch.ones(2, 7, dtype=torch.long)
    model(ids(2, 1, seed=3), attention_mask=mask, cache=cache_of(out), use_cache=True)
    assert reads == []


def test_no_deprecation_message_on_a_normal_run(monkeypatch):
    """generate (greedy, beam, sampling), hololm's generate_text and a cached forward speak
    only the installed transformers' names: nothing is logged or warned as deprecated."""
    import logging
    import warnings

    from hololm.generation import generate_text

    said = []
    for method in ("warning", "warning_once", "info"):
        original = getattr(logging.Logger, method)

        def recording(self, msg, *args, _original=original, **kwargs):
            said.append(str(msg))
            return _original(self, msg, *args, **kwargs)

        monkeypatch.setattr(logging.Logger, method, recording)
    tokenizer = byte_tokenizer()
    model = build("holo", True, vocab_size=len(tokenizer))
    prompt = ids(2, 5).clamp(min=1)  # no pad id (0) inside: generate would mask it out
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
        model.generate(prompt, max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)
        model.generate(prompt, max_new_tokens=3, do_sample=True, pad_token_id=0)
        generate_text(model, tokenizer, "Hello", max_new_tokens=3, temperature=0)
        out = model(prompt, use_cache=True)
        model(prompt[:, :1], cache=cache_of(out))
    said += [str(w.message) for w in caught]
    assert not [m for m in said if "deprecat" in m.lower()], said
