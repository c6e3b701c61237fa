"""Params sections of the reward and of sampling: `reward`, `calibrate`, `diagnose`, `rollouts` (and its
`vllm` options)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from srppo.config.section import Section


class RewardConfig(Section):
    """What PPO optimises: the coherent reward (SRPPO) or an external preference reward model (RM-PPO)."""

    source: Literal["coherent", "model"] = Field(
        "coherent", description="'coherent': Eq. (3), log p_SFT - log p_PT. 'model': the score of the sequence-"
        "classification reward model at `model_path` (the RM-PPO baseline), read at the last response token.")
    model_path: str | None = Field(None, description="Directory of the reward model (safetensors) for source 'model'.")

    @model_validator(mode="after")
    def _model_needs_path(self):
        if self.source == "model" and not self.model_path:
            raise ValueError("reward.source='model' needs reward.model_path (a sequence-classification model)")
        return self

class CalibrateConfig(Section):
    """Measures the coherent reward before PPO and writes its normalisation explicitly."""

    n_prompts: int = Field(32, ge=2, description="Calibration prompts sampled with the SFT and PT policies.")
    normalize: bool = Field(True, description="Shift/scale the reward by SFT-sample statistics.")
    clip_quantile: float = Field(
        0.01, gt=0, lt=0.5, description="Clip range = [q, 1-q] quantiles of normalised SFT-sample rewards, widened.")
    clip_margin: float = Field(1.0, ge=0, description="Added on both sides of the quantile clip range.")


class DiagnoseConfig(Section):
    """Before PPO: does the reward point toward the checker? Best-of-k by reward among p_SFT's samples against
    their pass rate, per family (srppo/evaluation/diagnose.py). The prompts file is the stage's argument."""

    n_prompts_per_family: int = Field(
        2, ge=1, description="Prompts drawn per family (seeded); all when fewer. The embedded default keeps it "
        "cheap (2 x 8 samples per family, about 2 minutes); docs/results/reward-diagnostic.md uses 12.")
    samples_per_prompt: int = Field(8, ge=1, description="p_SFT samples per prompt: the n of pass@k and best-of-k.")
    ks: list[int] = Field([1, 2, 4, 8], min_length=1, description="Best-of-k sizes, each at most samples_per_prompt; "
                          "best-of-k costs ln k - (k-1)/k nats of KL to p_SFT.")
    temperature: float | None = Field(None, gt=0, description="Sampling temperature; null = rollouts.temperature.")
    max_new_tokens: int | None = Field(None, ge=1, description="Tokens per sample; null = rollouts.max_new_tokens.")
    margin: float = Field(5.0, ge=0, description="Points of accuracy best-of-(largest k) must gain over the pass rate "
                          "for the verdict 'toward' (or lose, for 'away'); in between: 'flat'.")

    @model_validator(mode="after")
    def _ks_fit_the_samples(self):
        if min(self.ks) < 1 or max(self.ks) > self.samples_per_prompt:
            raise ValueError(f"diagnose.ks ({self.ks}) must lie in [1, diagnose.samples_per_prompt="
                             f"{self.samples_per_prompt}]: best-of-k picks among one prompt's samples")
        return self


class VLLMOptions(Section):
    """The vLLM engine (rollouts.engine: vllm), colocated with the trainer in the same process."""

    gpu_memory_utilization: float = Field(
        0.3, gt=0, lt=1, description="GPU memory share for vLLM's weights + KV cache; the actor, critic, "
        "p_SFT and p_PT share the rest of the GPU.")
    cpu_kv_cache_gb: int = Field(1, ge=1, description="KV cache size on the CPU backend (VLLM_CPU_KVCACHE_SPACE).")
    enforce_eager: bool = Field(True, description="No CUDA graphs / torch.compile: fast startup, "
                                "and fp32 SmolLM2 on CPU produced garbage once with compile.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine.")
    max_model_len: int | None = Field(None, ge=16, description="Context cap for the KV cache; null = the model's.")


class RolloutConfig(Section):
    """Sampling: shared by the `rollouts` buffers (critic warm-up) and PPO's own generation."""

    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="Rollout backend: 'hf' (transformers generate on the live model), 'vllm' "
        "(needs vLLM installed; weights synced into the engine after each PPO update) or 'auto': vLLM where it "
        "imports, else hf; except PPO's own sampling off a GPU or with LoRA, which stays on hf (on a CPU, 16 "
        "rollouts per iteration gain less from vLLM than its weight sync and the extra actor forward cost), and "
        "a job of fewer than 8,192 tokens of budget (rows x max_new_tokens: calibrate's 32-prompt samples, the "
        "rollouts stage's 112), "
        "where vLLM's 13 s to import and start cost more than it saves. The engine a stage used is in its report.")
    vllm: VLLMOptions = VLLMOptions()
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(16, ge=1, description="Prompts generated together.")
    score_batch_size: int = Field(
        16, ge=1, description="Sequences per no-grad forward when scoring rollouts (p_SFT, p_PT) and making "
        "PPO experience (actor, critic): bounds the logits' memory (B x T x vocab in fp32).")
    buffer_size: int = Field(16, ge=1, description="Rollouts per buffer (paper: 1024).")
    n_buffers: int = Field(
        7, ge=1, description="Buffers written for the critic warm-up (paper: 35), one more than "
        "ppo.critic_warmup_buffers to hold one out.")


# The estimators that need several samples per prompt; mirrors srppo.methods.ppo.estimators.GROUPED so this
# module stays free of torch (tests keep the two equal).
