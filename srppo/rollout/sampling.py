"""The configured rollout engine, its sampling settings, and the prompts it samples from.

Shared by every stage that samples (calibrate, rollouts, ppo, eval and the baselines).
"""

from __future__ import annotations

from srppo.config.params import RolloutConfig
from srppo.data.batch import encode_prompt, encode_response
from srppo.data.records import DataError
from srppo.rollout.engine import Generation, SamplingParams, make_engine


def rollout_engine(cfg: RolloutConfig, model, tok, model_path, seed: int, dtype, batch_size: int | None = None):
    """The configured engine sampling from `model` (vLLM starts from `model_path`, the same weights)."""
    return make_engine(cfg.engine, model, tok, batch_size or cfg.batch_size, model_path=str(model_path),
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
