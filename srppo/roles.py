"""Loading the frozen roles and turning records into prompts: shared by the model stages."""

from __future__ import annotations

from srppo.config import RolloutConfig
from srppo.data.chat import encode_prompt, encode_response
from srppo.models import load_causal_lm
from srppo.rollout.engine import Generation, SamplingParams


def frozen(path, device, dtype):
    return load_causal_lm(path, device, dtype, trainable=False).eval()


def sampling_params(cfg: RolloutConfig) -> SamplingParams:
    return SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def prompt_ids(tok, records: list[dict]) -> list[list[int]]:
    return [encode_prompt(tok, r["messages"]) for r in records]


def demo_generations(tok, records: list[dict]) -> list[Generation]:
    """Demonstrations dressed as generations, so they are scored exactly like samples."""
    out = []
    for r in records:
        p = encode_prompt(tok, r["messages"])
        out.append(Generation(p, encode_response(tok, r["messages"], r["response"], p), truncated=False))
    return out
