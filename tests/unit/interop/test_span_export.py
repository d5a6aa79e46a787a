"""A span-QA run exports as Transformers' question-answering class of its family, with the same
start and end logits (Llama and GPT-2 layouts)."""

from __future__ import annotations

import json

import pytest
import torch
from _interop_support import GPT2, LLAMA, char_tokenizer, gpt_config, make_run, transformers_module

from lmforge.interop.export import export_hf
from lmforge.models.heads import SPAN_DIR, SpanQAHead, load_span_head, save_span_head
from lmforge.run.rundir import load_run


@pytest.mark.parametrize(
    ("family", "qa_class"),
    [(LLAMA, "LlamaForQuestionAnswering"), (GPT2, "GPT2ForQuestionAnswering")],
)
@torch.no_grad()
def test_span_run_exports_to_the_qa_class_with_equal_logits(tmp_path, family, qa_class):
    transformers = transformers_module()
    run, _ = make_run(tmp_path / "run", gpt_config(family))
    torch.manual_seed(3)
    model = SpanQAHead(load_run(run).model)
    model.qa_outputs.weight.normal_(0, 0.5)
    model.qa_outputs.bias.normal_(0, 0.5)
    save_span_head(model, run / SPAN_DIR, {"task": "squad", "max_len": 32})
    out = export_hf(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [qa_class]
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(out).eval()
    assert type(hf).__name__ == qa_class
    ours, _ = load_span_head(load_run(run).model, run / SPAN_DIR)
    ids = torch.tensor([char_tokenizer().encode("Before we proceed any further")])
    start, end = ours(ids)
    theirs = hf(input_ids=ids)
    assert torch.allclose(theirs.start_logits, start, atol=1e-4)
    assert torch.allclose(theirs.end_logits, end, atol=1e-4)
    assert start.std() > 0.1  # the head is not trivially zero
