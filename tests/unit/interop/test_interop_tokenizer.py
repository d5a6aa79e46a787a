"""Exported tokenizers encode exactly as lmforge's, for every kind; GPT-2's equals tiktoken's."""

from __future__ import annotations

import importlib.util
import json

import pytest
import tokenizers
from _interop_support import TEXT, transformers_module
from lmforge_testing import require
from tokenizers import models, pre_tokenizers, processors

from lmforge.data.tokenizer import (
    EOT,
    Tokenizer,
    build_byte,
    build_char,
    load_file,
    load_gpt2,
    train_bpe,
)
from lmforge.interop.hf_tokenizer import TOKENIZER_FILES, write_hf_tokenizer

SAMPLES = [
    TEXT,
    "Hello, world!  It's 2024.\n\n\tcafé naïve — 東京 🙂",
    f"two documents{EOT}joined{EOT}",
    "   leading and trailing spaces   ",
    "x",
    "",
]


def _llama_like_file(tmp_path) -> Tokenizer:
    """A 'file' tokenizer whose post-processor adds <s>, as Llama's tokenizer.json does."""
    inner = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>"])
    inner.train_from_iterator([TEXT], trainer)
    inner.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", inner.token_to_id("<s>"))]
    )
    inner.save(str(tmp_path / "llama_like.json"))
    return load_file(tmp_path / "llama_like.json", [EOT])


def _tokenizer(kind, tmp_path, shared_data=None) -> Tokenizer:
    if kind == "char":
        return build_char([TEXT], [EOT, "<pad>"])
    if kind == "byte":
        return build_byte([EOT])
    if kind == "bpe":
        return train_bpe([TEXT * 3], 300, [EOT])
    if kind == "gpt2":
        return load_gpt2(shared_data / "gpt2_bpe", [EOT])
    return _llama_like_file(tmp_path)


KINDS = ["char", "byte", "bpe", "gpt2", "file"]


@pytest.fixture
def exported(request, tmp_path):
    kind = request.param
    shared = request.getfixturevalue("shared_data") if kind == "gpt2" else None
    tokenizer = _tokenizer(kind, tmp_path, shared)
    out = tmp_path / "hf"
    out.mkdir()
    write_hf_tokenizer(tokenizer, out, model_max_length=64)
    return tokenizer, out


@pytest.mark.parametrize("exported", KINDS, indirect=True)
def test_exported_files_encode_like_lmforge(exported):
    tokenizer, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(TOKENIZER_FILES)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["eos_token"] == EOT and not config["add_bos_token"]
    # The runtime HF uses for these files, called as HF calls it (special tokens on).
    inner = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in SAMPLES:
        assert inner.encode(text, add_special_tokens=True).ids == tokenizer.encode(text), text


@pytest.mark.parametrize("exported", KINDS, indirect=True)
def test_autotokenizer_encodes_and_decodes_like_lmforge(exported):
    transformers = transformers_module()
    tokenizer, out = exported
    hf = transformers.AutoTokenizer.from_pretrained(out)
    for text in SAMPLES:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == tokenizer.decode(ids), text
    assert hf(SAMPLES[:3])["input_ids"] == tokenizer.encode_batch(SAMPLES[:3])
    assert hf.eos_token_id == hf.bos_token_id == tokenizer.eot_id
    assert hf.pad_token_id == (
        tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eot_id
    )


def test_gpt2_tokenizer_equals_tiktoken_from_the_same_files(shared_data, tmp_path):
    require(importlib.util.find_spec("tiktoken") is not None, "tiktoken not installed")
    transformers = transformers_module()
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    files = shared_data / "gpt2_bpe"
    # Built from the local files: tiktoken.get_encoding would try to download them.
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files / "vocab.bpe"), encoder_json_file=str(files / "encoder.json")
    )
    reference = tiktoken.Encoding(
        "gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )
    tokenizer = load_gpt2(files, [EOT])
    write_hf_tokenizer(tokenizer, tmp_path, model_max_length=1024)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20_000]
    text += "\n" + SAMPLES[1] + f"  {EOT}  tabs\t\tand  'quotes' it's we'll 12345 !!!\n"
    expected = reference.encode(text, allowed_special={EOT})
    assert expected[:2] == reference.encode("First Citizen")
    assert hf(text)["input_ids"] == expected
    assert tokenizer.encode(text) == expected
