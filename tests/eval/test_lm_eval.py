"""run_lm_eval: lm-evaluation-harness's "hf" model on a saved hololm checkpoint, with a local
multiple-choice task (offline), scoring exactly what the model computes."""

import json

import pytest
import torch

from hololm.errors import CheckpointError
from tests.eval.helpers import TOKENIZER, tiny

pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install "
                                      "'hololm[eval]')")

from hololm.eval.lm_eval import run_lm_eval  # noqa: E402  (after the skip)

DOCS = [{"question": "2 + 2 =", "choices": ["4", "5", "22"], "label": 0},
        {"question": "The capital of France is", "choices": ["Paris", "Rome"], "label": 0},
        {"question": "Cats say", "choices": ["woof", "meow"], "label": 1},
        {"question": "One, two,", "choices": ["three", "ten", "zero"], "label": 0}]

TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@torch.no_grad()
def loglikelihood(model, context: str, continuation: str) -> float:
    """Summed log-probability of `continuation` after `context`."""
    ids = TOKENIZER(context + continuation)["input_ids"]
    n = len(TOKENIZER(continuation)["input_ids"])
    logprobs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids)))


@pytest.mark.parametrize("batch_size", [1, 4])  # 4: right-padded batches of choices
def test_local_multiple_choice_task_scores_what_the_model_computes(tmp_path, checkpoint_dir,
                                                                   batch_size):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (tasks / "tiny_choice.yaml").write_text(TASK.format(data=data))

    results = run_lm_eval(checkpoint_dir, ["tiny_choice"], include_path=tasks,
                          include_defaults=False, log_samples=True, batch_size=batch_size)

    model = tiny("holo", hybrid_ratio=0)  # the model saved in checkpoint_dir
    correct = 0
    samples = sorted(results["samples"]["tiny_choice"], key=lambda s: s["doc_id"])
    for doc, sample in zip(DOCS, samples, strict=True):
        # the harness asks for " " + choice after the question (its target delimiter)
        ours = [loglikelihood(model, doc["question"], " " + c) for c in doc["choices"]]
        theirs = [resp[0][0] for resp in sample["resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        correct += max(range(len(ours)), key=ours.__getitem__) == doc["label"]
    assert results["results"]["tiny_choice"]["acc,none"] == pytest.approx(correct / len(DOCS))


def test_missing_checkpoint_fails_before_the_harness_starts(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run_lm_eval(tmp_path / "missing", ["tiny_choice"])


GENERATE_TASK = """task: tiny_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_generate_until_with_padded_batches_equals_each_prompt_alone(tmp_path, checkpoint_dir):
    """The harness left-pads prompts of different lengths into one batch: each continuation
    must be what greedy decoding of that prompt alone gives."""
    from hololm.generation import generate_text

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "docs.jsonl"
    prompts = ["2 + 2 =", "The capital of France is", "Hi", "One, two, three, four,"]
    data.write_text("".join(json.dumps({"question": p, "answer": "x"}) + "\n" for p in prompts))
    (tasks / "tiny_generate.yaml").write_text(GENERATE_TASK.format(data=data))

    results = run_lm_eval(checkpoint_dir, ["tiny_generate"], include_path=tasks,
                          include_defaults=False, log_samples=True, batch_size=2)

    model = tiny("holo", hybrid_ratio=0)  # the model saved in checkpoint_dir
    samples = sorted(results["samples"]["tiny_generate"], key=lambda s: s["doc_id"])
    for prompt, sample in zip(prompts, samples, strict=True):
        alone = generate_text(model, TOKENIZER, prompt, max_new_tokens=8, temperature=0,
                              stop_at_eos=False).text.split("\n\n")[0]  # as the harness
        assert sample["resps"][0][0] == alone, prompt
