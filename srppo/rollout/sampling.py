"""The configured rollout engine, its sampling settings, and the prompts it samples from.

Shared by every stage that samples (calibrate, rollouts, ppo, eval and the baselines).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

from srppo.config.params import RolloutConfig
from srppo.data.batch import encode_prompt, encode_response
from srppo.data.records import DataError
from srppo.rollout.engine import Generation, SamplingParams, make_engine
from srppo.runtime.precision import autocast_dtype


# vLLM's fixed cost before its first token on a CPU: about 9 s to import it and 4 s to start an engine (2-core
# EPYC). The transformers engine samples about 170 tokens/s there (16 rows, bf16, eager attention), vLLM about
# 380: vLLM pays off from roughly 4,000 sampled tokens, i.e. about 8,000 tokens of budget (rows x
# max_new_tokens) at the testbed's response lengths (responses fill about half their budget).
VLLM_MIN_TOKENS = 8192

_used: set[str] = set()  # the engines rollout_engine built in this process


def engine_name(cfg: RolloutConfig, model_path=None, trains: bool = False, shared_base: bool = False,
                tokens: int | None = None) -> str:
    """The engine `rollouts.engine` resolves to for the model at `model_path`. 'auto' picks vLLM where it
    imports and can run that model (off a GPU, vLLM's CPU attention has kernels for some head sizes only),
    and the transformers engine otherwise; a policy in training (`trains`: PPO's actor) keeps the transformers
    engine off a GPU, and always when its roles share one base model (`shared_base`: LoRA), which only that
    engine can sample from. `tokens`: the most tokens the engine will sample (rows x max_new_tokens); under
    VLLM_MIN_TOKENS, vLLM's start costs more than it saves and the transformers engine samples."""
    if cfg.engine != "auto":
        return cfg.engine
    if shared_base or (trains and not torch.cuda.is_available()):
        return "hf"
    if tokens is not None and tokens < VLLM_MIN_TOKENS:  # decided before vLLM is imported: that alone takes 9 s
        return "hf"
    reason = _vllm_unusable() or (_vllm_cannot_run(str(model_path)) if model_path is not None else None)
    if reason:
        _say_once(f"rollouts.engine=auto: the transformers engine samples ({reason})")
    return "hf" if reason else "vllm"


def engines_used() -> str:
    """The engines this process sampled with ('hf', 'vllm' or 'hf+vllm'; '' if none): for stage reports."""
    return "+".join(sorted(_used))


@functools.cache
def _vllm_unusable() -> str | None:
    from srppo.rollout.vllm_engine import vllm_available

    return vllm_available()


@functools.cache
def _vllm_cannot_run(model_path: str) -> str | None:
    """Why vLLM's CPU backend cannot run this model, or None (also on a GPU, and when the check itself fails:
    vLLM then says why when it starts)."""
    if torch.cuda.is_available():
        return None
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        sizes = CPUAttentionBackend.get_supported_head_sizes()
        config = json.loads((Path(model_path) / "config.json").read_text())
        head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    except Exception:
        return None
    return None if head in sizes else f"vLLM's CPU attention has no kernel for {model_path}'s head size {head}"


@functools.cache
def _say_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rollout_engine(cfg: RolloutConfig, model, tok, model_path, seed: int, dtype, batch_size: int | None = None,
                   trains: bool = False, shared_base: bool = False, tokens: int | None = None):
    """The configured engine (`engine_name`) sampling from `model`; vLLM starts from `model_path`, the same
    weights, in the autocast dtype when there is one (bf16 under `runtime.precision: auto`), as the
    transformers engine computes."""
    name = engine_name(cfg, model_path, trains, shared_base, tokens)
    if name == "vllm":
        dtype = autocast_dtype() or dtype
    _used.add(name)
    return make_engine(name, model, tok, batch_size or cfg.batch_size, model_path=str(model_path),
                       options=cfg.vllm, seed=seed, dtype=dtype)


def sampling_params(cfg: RolloutConfig) -> SamplingParams:
    return SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def prompt_ids(tok, records: list[dict], source: str = "prompts", max_new_tokens: int = 0,
               context: int | None = None) -> list[list[int]]:
    """Encoded prompts; with `context`, a prompt that leaves no room for `max_new_tokens` is an error."""
    ids = [encode_prompt(tok, r["messages"]) for r in records]
    if context is not None:
        check_context(ids, records, source, max_new_tokens, context)
    return ids


def check_context(ids: list[list[int]], records: list[dict], source: str, max_new_tokens: int, context: int) -> None:
    # checked before generation: past the context a model silently degrades (or crashes mid-run)
    for row, (p, rec) in enumerate(zip(ids, records), start=1):
        if len(p) + max_new_tokens > context:
            raise DataError(source, row, None, f"prompt (id {rec.get('id')}) is {len(p)} tokens; with "
                            f"max_new_tokens={max_new_tokens} it exceeds the model's context of {context} "
                            f"tokens (max_position_embeddings): shorten or filter it, or lower max_new_tokens")


def demo_generations(tok, records: list[dict]) -> list[Generation]:
    """Demonstrations dressed as generations, so they are scored exactly like samples."""
    out = []
    for r in records:
        p = encode_prompt(tok, r["messages"])
        out.append(Generation(p, encode_response(tok, r["messages"], r["response"], p), truncated=False))
    return out
