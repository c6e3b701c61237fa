"""vLLM rollout engine: batched sampling in a colocated vLLM engine, with in-place weight sync.

The engine runs in the trainer's process (vLLM's in-process engine core), so a weight sync is a
direct copy from the actor's tensors into vLLM's, through vLLM's own `reload_weights` (which knows
how HF names map onto its fused layers). No restart, no file round-trip. After a sync the prefix
cache is reset: cached KV blocks were computed by the old weights.

Each request gets its own seed (run seed, call counter, row), so a run is reproducible regardless
of how vLLM schedules the batch. Sampled-token log-probs come back *after* temperature/top-p
processing (`logprobs_mode='processed_logprobs'`): the distribution the tokens were drawn from,
which is what the trainer must use in the PPO ratio.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from srppo.rollout.engine import Generation, SamplingParams, cut_at_eos, register_engine

# Must be set before vLLM is imported: keep the engine core in this process (weight sync by
# reference, no pickling of a state dict to a second process).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

SUBMIT = 256  # prompts per generate() call


def vllm_available() -> str | None:
    """None when vLLM can be used here, else why not (tests print it when they skip)."""
    try:
        import vllm  # noqa: F401
    except Exception as err:  # ImportError, or a broken install (e.g. a CUDA torchvision on CPU)
        return f"vLLM is not usable in this environment: {type(err).__name__}: {err}"
    return None


def _engine_args(model_path: str, options, seed: int, dtype: torch.dtype) -> dict:
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # vLLM's CPU backend sizes its KV cache from this variable and otherwise drops torch to one
        # thread for the whole process (the trainer's too) unless OMP_NUM_THREADS is set.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kv_cache_gb))
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    args = dict(model=str(model_path), dtype=str(dtype).removeprefix("torch."), seed=seed,
                enforce_eager=options.enforce_eager, logprobs_mode="processed_logprobs",
                tensor_parallel_size=options.tensor_parallel_size, max_model_len=options.max_model_len)
    if on_gpu:
        args["gpu_memory_utilization"] = options.gpu_memory_utilization  # the trainer shares the GPU
    return args


@register_engine("vllm")
class VLLMEngine:
    def __init__(self, model, tok, batch_size: int = 16, model_path: str | None = None, options=None,
                 seed: int = 0, dtype: torch.dtype = torch.float32):
        if model_path is None:
            raise ValueError("the vLLM engine loads its weights from a model directory: pass model_path")
        reason = vllm_available()
        if reason:
            raise RuntimeError(f"rollouts.engine='vllm': {reason}. Install the vLLM extra (see README) "
                               f"or set rollouts.engine: hf")
        from vllm import LLM

        from srppo.config.params import VLLMOptions
        from srppo.models.loading import check_weights

        check_weights(Path(model_path))  # vLLM's own loader reports a truncated file as a bare SafetensorError
        options = options or VLLMOptions()
        # `batch_size` is not used: vLLM batches a call's prompts itself (`prefill_chunks`)
        self.tok, self.seed, self.calls = tok, seed, 0
        self.llm = LLM(**_engine_args(model_path, options, seed, dtype))
        scheduler = getattr(self.llm.llm_engine.vllm_config, "scheduler_config", None)
        self.prefill_budget = getattr(scheduler, "max_num_batched_tokens", None) or 2048
        self.last_sync_seconds = 0.0

    # a row's sample depends only on (seed, call, row): ranks can each sample a share of a buffer
    row_seeded = True

    def generate(self, prompts: list[list[int]], params: SamplingParams, progress=None,
                 rows: list[int] | None = None) -> list[Generation]:
        """`rows`: each prompt's index in the whole buffer when this process samples only a share of it."""
        from vllm import SamplingParams as VSampling
        from vllm.inputs import TokensPrompt

        self.calls += 1
        base = (self.seed * 1_000_003 + self.calls) * 100_003
        common = dict(max_tokens=params.max_new_tokens, logprobs=0, stop_token_ids=[self.tok.eos_token_id],
                      skip_special_tokens=False, detokenize=False)
        sample = dict(temperature=0.0) if params.greedy else dict(temperature=params.temperature, top_p=params.top_p)
        out: list[Generation] = []
        for start, chunk in prefill_chunks(prompts, self.prefill_budget):
            requests = [TokensPrompt(prompt_token_ids=list(p)) for p in chunk]
            ids = rows[start : start + len(chunk)] if rows is not None else range(start, start + len(chunk))
            sampling = [VSampling(**common, **sample, seed=base + row) for row in ids]
            for p, res in zip(chunk, self.llm.generate(requests, sampling, use_tqdm=False)):
                out.append(_to_generation(p, res.outputs[0], self.tok.eos_token_id, params.max_new_tokens))
            if progress is not None:
                progress.update(len(chunk))
        return out

    @torch.no_grad()
    def sync_weights(self, model) -> float:
        """Copy the trainer's current weights into the running engine; returns the seconds it took."""
        t = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
        self.last_sync_seconds = time.perf_counter() - t
        return self.last_sync_seconds

    def close(self) -> None:
        # the in-process engine holds the model and the KV cache until it is dropped
        del self.llm
        import gc
        gc.collect()


def prefill_chunks(prompts: list[list[int]], budget: int, limit: int = SUBMIT):
    """(start, prompts) per vLLM generate() call. vLLM schedules its own batches, so a call gets as many prompts
    as one prefill step of `budget` tokens (max_num_batched_tokens) takes, at most `limit`: `batch_size` prompts
    per call would cap it there (1.6x slower at 16 than at 64 on 2 CPU cores). Not more, because a prompt
    whose prefill is split across steps has its sampled token discarded and its seeded generator rewound,
    which vLLM cannot do to a CPU generator ("CPU Generator does not use offset"). A prompt longer than
    `budget` goes alone. The chunks also drive the progress bar."""
    start = 0
    while start < len(prompts):
        end, tokens = start + 1, len(prompts[start])
        while end < len(prompts) and end - start < limit and tokens + len(prompts[end]) <= budget:
            tokens += len(prompts[end])
            end += 1
        yield start, prompts[start:end]
        start = end


def _to_generation(prompt: list[int], completion, eos_id: int, max_new_tokens: int) -> Generation:
    tokens = list(completion.token_ids)
    response, truncated = cut_at_eos(tokens, eos_id, max_new_tokens)
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [step[tok].logprob for tok, step in zip(response, completion.logprobs)]
    return Generation(list(prompt), response, truncated, logprobs)
