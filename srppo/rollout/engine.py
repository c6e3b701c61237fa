"""Rollout engines: turn prompt token ids into sampled responses.

The interface is deliberately small so a vLLM engine can stand in for the transformers one: it
gets prompts as token ids and returns response token ids, cut after EOS, with a truncation flag.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from transformers import LogitsProcessorList

from srppo.runtime.precision import autocast


@dataclass
class Generation:
    prompt_ids: list[int]
    response_ids: list[int]  # ends with EOS unless truncated
    truncated: bool          # no EOS within max_new_tokens
    logprobs: list[float] | None = None  # engine's log-prob of each response token, when it reports them


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams, progress=None) -> list[Generation]:
        """One Generation per prompt, in order; `progress.update(n)` (a tqdm bar) as prompts finish."""

    def sync_weights(self, model) -> float:
        """Make the engine sample from `model`'s current weights; returns the seconds it took."""

    def close(self) -> None:
        """Free what the engine holds (an engine that owns a model copy frees it)."""


_ENGINES: dict[str, Callable[..., RolloutEngine]] = {}
# engines whose module imports heavy optional packages register themselves when first asked for
_LAZY = {"vllm": "srppo.rollout.vllm_engine"}


def register_engine(name: str):
    def wrap(factory):
        _ENGINES[name] = factory
        return factory
    return wrap


def make_engine(name: str, model, tok, batch_size: int, **engine_kwargs) -> RolloutEngine:
    """`engine_kwargs` (model_path, options, seed, dtype) matter to engines that hold their own copy
    of the weights (vLLM); the transformers engine samples from `model` itself."""
    if name not in _ENGINES and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _ENGINES:
        raise KeyError(f"unknown rollout engine '{name}'; available: {sorted(set(_ENGINES) | set(_LAZY))}")
    return _ENGINES[name](model=model, tok=tok, batch_size=batch_size, **engine_kwargs)


def cut_at_eos(tokens: list[int], eos_id: int, max_new_tokens: int) -> tuple[list[int], bool]:
    """Keep tokens up to and including the first EOS; truncated when there is none."""
    if eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1], False
    return tokens[:max_new_tokens], True


class TokenSampler:
    """A logits processor that samples the next token itself and keeps its log-prob, so PPO can take
    the sampling-time log-probs from generation instead of a second forward of the actor.

    generate() then runs greedy: the processor leaves only its chosen token finite, so argmax picks it.
    Sampling is by inverse CDF (one uniform number per row, a cumulative sum, a binary search) into a
    buffer kept across steps. torch.multinomial instead draws an exponential variate for every
    vocabulary entry and, with the softmax before it, allocates several (B, vocab) tensors per step:
    about a tenth of batched generation time on a CPU with a 49k vocabulary. The log-probs are the
    temperature-scaled log-softmax of the raw logits, the distribution the trainer's `token_logprobs`
    computes.
    """

    def __init__(self, temperature: float, generator: torch.Generator | None = None):
        self.temperature, self.generator, self.steps, self.buffer = temperature, generator, [], None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # transformers hands each processor its own float32 copy of the logits: edited in place
        scores = scores.float()
        if self.temperature != 1.0:
            scores.div_(self.temperature)
        if self.buffer is None or self.buffer.shape != scores.shape:
            self.buffer = torch.empty_like(scores)
        top = scores.amax(dim=-1, keepdim=True)
        cdf = torch.sub(scores, top, out=self.buffer).exp_().cumsum_(dim=-1)  # unnormalised
        total = cdf[:, -1:]
        # u in (0, total]; the first entry whose cumulative mass reaches u always has mass of its own
        u = (1.0 - torch.rand(total.shape, device=cdf.device, generator=self.generator)) * total
        token = torch.searchsorted(cdf, u)
        self.steps.append((scores.gather(1, token) - top - total.log()).squeeze(1))
        return scores.fill_(float("-inf")).scatter_(1, token, 0.0)

    def logprobs(self, batch_size: int) -> torch.Tensor:
        """(B, generated steps) log-probs of the sampled tokens."""
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(batch_size, 0)


@register_engine("hf")
class HFEngine:
    """transformers `generate` with left padding; batches prompts of similar length together."""

    # it samples from the trainer's own model, so its log-probs are the trainer's up to float noise
    logprobs_match_trainer = True

    def __init__(self, model, tok, batch_size: int = 16, **unused):
        self.model, self.tok, self.batch_size = model, tok, batch_size

    def sync_weights(self, model) -> float:
        return 0.0  # samples from the live model: nothing to copy

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams, progress=None) -> list[Generation]:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
        results: dict[int, Generation] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx], params)):
                results[i] = gen
            if progress is not None:
                progress.update(len(idx))
        return [results[i] for i in range(len(prompts))]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        device = next(self.model.parameters()).device
        pad = self.tok.pad_token_id
        T = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, T - len(p):] = torch.tensor(p)
            attn[i, T - len(p):] = 1
        was_training = self.model.training
        self.model.eval()
        # plain sampling goes through TokenSampler, which also records each token's log-prob; with
        # top-p those would be the renormalised nucleus's, not the distribution PPO's ratio uses, so
        # top-p samples through transformers' warpers and reports none
        sampler = TokenSampler(params.temperature) if not params.greedy and params.top_p == 1.0 else None
        sample = dict(do_sample=False) if params.greedy or sampler else dict(
            do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        ids, attn = ids.to(device), attn.to(device)
        with autocast(device):  # one context for the call: a trainable actor's weights are cast once
            out = self.model.generate(
                input_ids=ids, attention_mask=attn, max_new_tokens=params.max_new_tokens,
                pad_token_id=pad, eos_token_id=self.tok.eos_token_id, use_cache=True,
                past_key_values=self._shared_prefill(prompts, ids, attn),
                logits_processor=LogitsProcessorList([sampler]) if sampler else None, **sample)
        self.model.train(was_training)
        logprobs = sampler.logprobs(len(prompts)).tolist() if sampler else None
        gens = []
        for i, p in enumerate(prompts):
            resp, truncated = cut_at_eos(out[i, T:].tolist(), self.tok.eos_token_id, params.max_new_tokens)
            gens.append(Generation(list(p), resp, truncated, logprobs[i][: len(resp)] if logprobs else None))
        return gens

    def _shared_prefill(self, prompts: list[list[int]], ids: torch.Tensor, attn: torch.Tensor):
        """When prompts repeat (GRPO/RLOO groups), the key/value cache of every distinct prompt but its
        last token, computed once and copied to each row that shares it; generate() then runs only the
        last prompt token and the new ones. None when every prompt is distinct (or one token long)."""
        first: dict[tuple, int] = {}
        owner = [first.setdefault(tuple(p), i) for i, p in enumerate(prompts)]
        if len(first) == len(prompts) or min(map(len, prompts)) < 2:
            return None
        rows = torch.tensor(sorted(first.values()), device=ids.device)
        head, head_attn = ids[rows, :-1], attn[rows, :-1]
        cache = self.model(input_ids=head, attention_mask=head_attn, use_cache=True, logits_to_keep=1,
                           position_ids=(head_attn.cumsum(-1) - 1).clamp(min=0)).past_key_values
        slot = {row: k for k, row in enumerate(sorted(first.values()))}
        cache.reorder_cache(torch.tensor([slot[o] for o in owner], device=ids.device))
        return cache
