"""Tiny real models for tests: a byte-level BPE tokenizer trained here and a 2-layer Llama.

Everything is built locally in seconds; no hub, no downloads.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus() -> list[str]:
    from srppo.testbed import FAMILY_GROUPS, generate_family

    texts = []
    for fam in FAMILY_GROUPS:
        for it in generate_family(fam, 20, seed=1):
            texts += [it["messages"][-1]["content"], it["response"]]
    return texts + ["Follow the instruction exactly.", "system", "user", "assistant"]


def build_tokenizer(out: Path, chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out)
    return fast


def build_tiny_lm(out: Path, seed: int = 0, chat_template: str | None = CHATML, hidden_size: int = 32,
                  heads: int = 4) -> Path:
    """A 2-layer Llama (~0.2M parameters) with a locally trained tokenizer, saved as safetensors.

    vLLM's CPU attention kernels need a real head size (64+): pass hidden_size=128, heads=2.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tok = build_tokenizer(out, chat_template)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1),
                      max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out
