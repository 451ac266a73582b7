"""State-carrying training: the streams a run reads, the states it carries from window to window
(exactly one pass over the stream), what it refuses, and exact resumption."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hololm.data.packing import BatchSampler, StreamSampler, TokenData, document_positions
from hololm.errors import ConfigError
from hololm.models.presets import build_model
from hololm.train.carry import CarriedStates, check_carriable

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
EOS = 7


def _data(n: int) -> TokenData:
    return TokenData(torch.arange(n, dtype=torch.int32), None, 1, n)


def test_each_row_reads_consecutive_windows_of_its_own_lane():
    sampler = StreamSampler(_data(1000), seq_len=10, batch_size=2, grad_accum_steps=2, rank=1,
                            world_size=2)  # 8 lanes of 125 tokens, 12 windows each
    batches = [next(sampler) for _ in range(6)]
    # slot 0 of rank 1 holds lanes 4 and 5; its micro-batches are batches 0, 2, 4
    for k, batch in enumerate(batches[0::2]):
        assert batch["input_ids"][:, 0].tolist() == [4 * 125 + 10 * k, 5 * 125 + 10 * k]
        assert batch["continues"].tolist() == [k > 0] * 2
        assert batch["offset"].tolist() == [10 * k] * 2
    assert batches[1]["input_ids"][:, 0].tolist() == [6 * 125, 7 * 125]
    # a lane read to its end starts over, dropping what was carried
    wrapped = sampler.batch_for_rank(2 * 12, rank=1)
    assert wrapped["input_ids"][:, 0].tolist() == [4 * 125, 5 * 125]
    assert not wrapped["continues"].any()


def test_stream_sampler_refuses_streams_shorter_than_a_window_and_other_geometry():
    with pytest.raises(ConfigError, match="each shorter than seq_len 64"):
        StreamSampler(_data(1000), seq_len=64, batch_size=8, grad_accum_steps=2)
    sampler = StreamSampler(_data(1000), seq_len=10, batch_size=2, grad_accum_steps=2)
    state = {**sampler.state_dict(), "grad_accum_steps": 4}
    with pytest.raises(ConfigError, match="grad_accum_steps 4 -> 2"):
        sampler.load_state_dict(state)
    # a carried run's sampler state does not resume fresh windows, nor the other way round
    fresh = BatchSampler(_data(1000), seq_len=10, batch_size=2, seed=0)
    with pytest.raises(ConfigError, match="seed None -> 0"):
        fresh.load_state_dict(sampler.state_dict())
    with pytest.raises(ConfigError, match="carry_state None -> True"):
        sampler.load_state_dict(fresh.state_dict())


@pytest.mark.parametrize("eos", [EOS, None], ids=["document-resets", "one-stream"])
def test_carried_windows_equal_one_pass_over_the_stream(eos):
    """The loss of the second window, read from the first's carried state, is the loss of the
    same tokens in one forward pass over both windows (documents inside included)."""
    torch.manual_seed(0)
    model = build_model("long", "tiny", vocab_size=64, seq_len=32, **TINY)
    T = 16
    ids = torch.randint(8, 64, (2, 2 * T), generator=torch.Generator().manual_seed(1))
    ids[0, 5] = ids[0, 20] = ids[1, T - 1] = EOS  # a document ends in each window
    carried = CarriedStates(1, len(model.config.mixer_types), eos)

    def window(k: int) -> dict[str, torch.Tensor]:
        part = ids[:, k * T:(k + 1) * T]
        return {"input_ids": part, "labels": part, "continues": torch.full((2,), k > 0),
                "offset": torch.full((2,), k * T)}

    carried.loss(model, window(0), 0, torch.device("cpu"))
    second, count = carried.loss(model, window(1), 0, torch.device("cpu"))
    positions = document_positions(ids, eos) if eos is not None else torch.arange(2 * T)[None]
    logits = model(ids, position_ids=positions, use_cache=False).logits
    expected = F.cross_entropy(logits[:, T:-1].flatten(0, 1), ids[:, T + 1:].flatten(),
                               reduction="sum")
    torch.testing.assert_close(second, expected, atol=1e-4, rtol=1e-5)
    assert count == 2 * (T - 1)
    # the carried state is detached: backpropagation stays within a window
    assert all(not t.requires_grad for s in carried.states[0] for t in s.values())


def test_carry_state_refuses_attention_layers_and_baselines():
    hybrid = build_model("long-hybrid", "tiny", vocab_size=64, seq_len=32, **TINY)
    with pytest.raises(ConfigError, match="without attention layers"):
        check_carriable(hybrid, "long-hybrid")
    llama = build_model("llama", "tiny", vocab_size=64, seq_len=32, **TINY)
    with pytest.raises(ConfigError, match="Hugging Face baseline"):
        check_carriable(llama, "llama")
