"""One typed config: `Params`, a pydantic model per `params.yaml` section, and the checks across sections.

Every DVC stage reads only its own section(s), so changing a `ppo` knob reruns `ppo` and `eval` and nothing
upstream. The sections live in runtime_and_data.py, training.py, sampling.py, ppo.py and evaluation.py; their
defaults *are* the embedded default (SmolLM2-135M on a laptop CPU); `configs/*.yaml` presets override them.
Paper references point at arXiv 2510.21090. Reading, merging and validating params files is files.py.
"""

from __future__ import annotations

from pydantic import model_validator

from srppo.config.evaluation import BenchmarkConfig, EvalConfig, JudgeConfig
from srppo.config.ppo import GROUP_ESTIMATORS, PPOConfig
from srppo.config.runtime_and_data import BaseConfig, FileSource, PrepareConfig, RuntimeConfig
from srppo.config.sampling import CalibrateConfig, DiagnoseConfig, RewardConfig, RolloutConfig, VLLMOptions
from srppo.config.section import Section
from srppo.config.training import DataFilterConfig, LoRAConfig, RewardModelConfig, SFTConfig, SPINConfig

__all__ = ["GROUP_ESTIMATORS", "BaseConfig", "BenchmarkConfig", "CalibrateConfig", "DataFilterConfig", "DiagnoseConfig",
           "EvalConfig", "FileSource", "JudgeConfig", "LoRAConfig", "PPOConfig", "Params", "PrepareConfig",
           "RewardConfig", "RewardModelConfig", "RolloutConfig", "RuntimeConfig", "SFTConfig", "SPINConfig", "Section",
           "VLLMOptions"]


class Params(Section):
    runtime: RuntimeConfig = RuntimeConfig()
    base: BaseConfig = BaseConfig()
    prepare: PrepareConfig = PrepareConfig()
    sft: SFTConfig = SFTConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    diagnose: DiagnoseConfig = DiagnoseConfig()
    rollouts: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    ppo: PPOConfig = PPOConfig()
    eval: EvalConfig = EvalConfig()
    spin: SPINConfig = SPINConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    data_filter: DataFilterConfig = DataFilterConfig()
    lora: LoRAConfig = LoRAConfig()

    @model_validator(mode="after")
    def _cross_section(self):
        if self.rollouts.buffer_size % self.ppo.mini_batch_size:
            raise ValueError(f"ppo.mini_batch_size ({self.ppo.mini_batch_size}) must divide "
                             f"rollouts.buffer_size ({self.rollouts.buffer_size})")
        if self.rollouts.buffer_size % self.ppo.group_size:
            raise ValueError(f"rollouts.buffer_size ({self.rollouts.buffer_size}) must be a multiple of "
                             f"ppo.group_size ({self.ppo.group_size}): a buffer holds whole groups of samples")
        n = self.runtime.world_size
        if self.sft.batch_size < n or self.ppo.mini_batch_size % n:
            raise ValueError(f"with {n} processes (runtime.num_processes x nnodes), sft.batch_size ({self.sft.batch_size}) must be at "
                             f"least {n} and ppo.mini_batch_size ({self.ppo.mini_batch_size}) a multiple of it")
        if self.reward.source == "model" and self.ppo.reward_mode == "token":
            raise ValueError("ppo.reward_mode='token' is the coherent reward's per-token log-ratio: it needs "
                             "reward.source='coherent'")
        if self.lora.enabled and (n > 1 or self.rollouts.engine == "vllm"):
            raise ValueError("lora.enabled runs in one process with rollouts.engine='hf' (the roles share one base "
                             f"model in memory); got {n} processes, rollouts.engine='{self.rollouts.engine}'")
        if self.ppo.logp_old == "engine" and self.rollouts.top_p < 1:
            raise ValueError("ppo.logp_old='engine' needs rollouts.top_p = 1: under top-p the engine's log-probs "
                             "are the renormalised nucleus's, not the distribution PPO's ratio uses")
        if self.ppo.critic_warmup_buffers > self.rollouts.n_buffers:
            raise ValueError(f"ppo.critic_warmup_buffers ({self.ppo.critic_warmup_buffers}) exceeds "
                             f"rollouts.n_buffers ({self.rollouts.n_buffers})")
        return self
