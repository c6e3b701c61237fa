"""Params sections of the supervised trainings: `sft`, `lora`, and the grid's `spin`, `reward_model`,
`data_filter`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from srppo.config.section import Section


class SFTConfig(Section):
    """Eq. (1): maximum likelihood on demonstrations, loss on response tokens only."""

    epochs: float = Field(3.0, gt=0, le=1000, description="Paper: 2 (Table 6). Fractional epochs allowed.")
    lr: float = Field(2e-5, gt=0, le=1, description="Paper grid: {1e-5, 5e-6, 1e-6, 5e-7}.")
    batch_size: int = Field(8, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (paper: 128 per step).")
    group_by_length: bool = Field(
        False, description="Batch rows of similar length (sorted within random groups of 8 batches, batch order "
        "shuffled): 96 % of a forward's tokens real instead of 71 % on the default's demonstrations, SFT 1.4x "
        "faster. Off by default: on the testbed a row's length goes with its family, so grouped batches hold "
        "fewer families, and the default's training loss ended higher (third-epoch mean 0.96 against 0.77 ungrouped, both under bf16).")
    max_len: int = Field(256, ge=8, description="Prompt + response tokens; longer rows are an error.")
    overlength: Literal["error", "drop"] = Field(
        "error", description="A demonstration over max_len: 'error' stops before training, naming the row; "
        "'drop' leaves it out and logs how many were dropped (real data with a tail of long rows).")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(
        20, ge=0, description="Optimizer steps between resumable checkpoints in data/checkpoints/sft; 0 = off. "
        "A rerun resumes from the latest.")
    checkpoint_min_seconds: float = Field(
        60.0, ge=0, description="Skip a due checkpoint until this long after the last one (or the start): a save "
        "writes the weights and optimizer states (1.6 GB on the 135M model, 1-4 s here), so the default's "
        "72 steps of about 1.5 s checkpoint once, not 3 times. 0 = every checkpoint_every steps.")


class LoRAConfig(Section):
    """Low-rank adapters instead of full fine-tuning (srppo/models/lora.py). With `enabled`, SFT trains an adapter on
    p_PT and PPO keeps ONE copy of the base weights: p_PT = adapters off, p_SFT = the SFT adapter, actor and
    critic = their own adapters initialised from it. Read by the sft and ppo stages; needs the `lora` extra
    (peft), the hf engine and one process. Adapters usually want a larger sft.lr / ppo.actor_lr than full
    fine-tuning (LoRA's own paper used 1e-4 to 2e-4 where full fine-tuning used 1e-5)."""

    enabled: bool = Field(False, description="Train adapters (sft and ppo stages) instead of all weights.")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scale: the update is (alpha / r) * B A.")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field(
        "all-linear", description="Which linear layers get adapters: 'all-linear' (every one but the LM head) "
        "or module names, e.g. [q_proj, v_proj].")

class SPINConfig(Section):
    """The SPIN baseline (Table 1, stage `spin` of comparison/dvc.yaml): DPO with demonstrations as chosen
    and the current model's samples as rejected, the previous iterate as the frozen opponent."""

    iterations: int = Field(1, ge=1, description="SPIN iterations (SPIN's paper reports iterations 0-3; each "
                            "resamples every demonstration prompt and retrains).")
    epochs: int = Field(1, ge=1, description="DPO passes over each iteration's pairs.")
    lr: float = Field(2e-6, gt=0, le=1, description="SPIN's published rate is 5e-7 at 7B; a 135M model needs more.")
    beta: float = Field(0.1, gt=0, description="DPO temperature (SPIN: 0.1).")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget of the model's own (rejected) samples.")
    temperature: float = Field(1.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)


class RewardModelConfig(Section):
    """The preference reward model of the RM-PPO baseline (stage `reward_model` of comparison/dvc.yaml).

    p_SFT samples `samples_per_prompt` answers to each demonstration prompt; the testbed's checkers rank
    them (and the demonstration); a Bradley-Terry model initialised from p_SFT learns the ranking. It sees
    the same prompts as SFT, so it gets no data the coherent reward lacks, only preference labels.
    """

    n_prompts: int | None = Field(
        64, ge=2, description="Demonstration prompts used (the first N after a seeded shuffle); null = all. "
        "Sampling and pair training dominate the baseline's cost on a CPU.")
    preferences: Literal["checkers", "demonstrations"] = Field(
        "checkers", description="Where the labels come from: `checkers` ranks every answer by the testbed's "
        "checkers (the embedded default); `demonstrations` prefers the demonstration to each p_SFT sample, "
        "for real data that has no checkers and no preference dataset.")
    samples_per_prompt: int = Field(4, ge=2, description="p_SFT samples per demonstration prompt.")
    include_demos: bool = Field(True, description="The demonstration itself is one of the ranked answers.")
    max_pairs_per_prompt: int = Field(4, ge=1, description="Preference pairs kept per prompt (better, worse).")
    epochs: int = Field(1, ge=1, description="Passes over the pairs.")
    lr: float = Field(1e-5, gt=0, le=1)
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget of the sampled answers.")
    temperature: float = Field(1.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)


class DataFilterConfig(Section):
    """The coherent reward as a data filter (§5; stage `filter` of comparison/dvc.yaml)."""

    keep_fraction: float = Field(0.5, gt=0, le=1, description="Share of the demonstrations kept, by reward; "
                                 "SFT on them is compared with SFT on a random subset of the same size.")
