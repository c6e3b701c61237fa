"""The `eval` params section: the testbed, the public benchmarks and the judged win rate."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from srppo.config.section import Section


class BenchmarkConfig(Section):
    """The paper's benchmarks through lm-evaluation-harness, offline from local files (null = skip)."""

    gsm8k_test: str | None = Field(None, description="GSM8K test JSONL (question, answer with '#### N').")
    gsm8k_train: str | None = Field(None, description="GSM8K train JSONL for the 5 few-shot examples; "
                                    "null = draw them from the test file.")
    ifeval: str | None = Field(None, description="IFEval input_data.jsonl (key, prompt, instruction_id_list, kwargs).")
    gpqa: str | None = Field(None, description="A local copy of GPQA (e.g. gpqa_main.csv, or JSONL) with its columns "
                             "Question, Correct Answer, Incorrect Answer 1-3; gated on the hub, so never fetched.")
    gpqa_modes: list[Literal["direct", "cot"]] = Field(
        ["direct", "cot"], description="'direct': log-likelihood of (A)-(D), acc; 'cot': zero-shot chain of "
        "thought, exact match of the extracted letter (lm-eval's gpqa_main_zeroshot / _cot_zeroshot).")
    gpqa_max_tokens: int = Field(1024, ge=1, description="Generation budget per GPQA CoT answer.")
    limit: int | None = Field(None, ge=1, description="First N examples of each benchmark (subsample on CPU).")
    gsm8k_max_tokens: int = Field(256, ge=1, description="Generation budget per GSM8K answer (lm-eval: 256).")
    ifeval_max_tokens: int = Field(1280, ge=1, description="Generation budget per IFEval answer (lm-eval: 1280).")
    batch_size: int = Field(8, ge=1)


class JudgeConfig(Section):
    """AlpacaEval-style win rate against reference outputs, judged by an OpenAI-compatible endpoint
    (null endpoint = skip). The API key is read from the environment variable named here, never from params."""

    endpoint: str | None = Field(None, description="Base URL, e.g. http://127.0.0.1:8000/v1 (`vllm serve`) "
                                 "or https://api.openai.com/v1.")
    model: str = Field("gpt-4-1106-preview", description="Judge model name at the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key (may be unset).")
    instructions: str | None = Field(None, description="JSONL with `prompt` and the reference field "
                                     "(e.g. AlpacaEval's 805 instructions).")
    reference_field: str = Field("reference_gpt4_1106_preview", description="Field holding the reference output.")
    limit: int | None = Field(None, ge=1, description="First N instructions (subsample on CPU).")
    max_new_tokens: int = Field(512, ge=1, description="Generation budget per answer.")


# the names the eval stage is given: the method's models and the baselines of the comparison grid
MODEL_NAMES = ("pretrained", "sft", "srppo", "sft_extended", "spin", "rm_ppo", "rloo", "srppo_token", "sft_filtered",
               "sft_random")


class EvalConfig(Section):
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    autocast: bool = Field(
        False, description="Answer under runtime.precision's autocast. Off by default: the answers are a "
        "measurement, decoded in the weights' own dtype (runtime.dtype: fp32 on a CPU). Greedy decoding turns "
        "bf16's rounding into different answers, and on the embedded default that cost p_SFT about 3 points of "
        "strict accuracy (seed 0: 41.15 in fp32, 38.54 under bf16 autocast, 37.50 in vLLM's bf16). On: faster on "
        "bf16 hardware, for a noisier instrument.")
    models: list[str] = Field(
        ["sft", "srppo"], description="Models to evaluate, by the names the eval stage is given "
        "(dvc.yaml: pretrained, sft, srppo; comparison/dvc.yaml adds the baselines). A PPO method's snapshot "
        "along its run is NAME@PERCENT (srppo@25: ppo.snapshots). The embedded default leaves p_PT out to keep "
        "`dvc repro` within 15 minutes (its row: configs/fidelity.yaml, docs/results/).")

    @field_validator("models")
    @classmethod
    def _known_models(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not re.fullmatch(rf"({'|'.join(MODEL_NAMES)})(@\d{{1,2}})?", n)]
        if bad:
            raise ValueError(f"unknown model name(s) {bad}: one of {', '.join(MODEL_NAMES)}, or a PPO method's "
                             f"snapshot NAME@PERCENT (e.g. srppo@25)")
        return names
    benchmarks: BenchmarkConfig = BenchmarkConfig()
    judge: JudgeConfig = JudgeConfig()
