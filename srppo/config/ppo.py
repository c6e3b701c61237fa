"""The `ppo` params section: Self-Rewarding PPO's knobs, with the paper's values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from srppo.config.section import Section


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
    snapshots: list[float] = Field(
        [], description="Fractions of ppo.iterations (each in (0, 1)) after which the actor is also saved, under "
        "OUT_DIR/snapshots/<percent> (e.g. 0.25 -> snapshots/25), with the KL to p_SFT of its own next samples in "
        "the report: the policy along the run, to evaluate accuracy against KL. [] = the final actor only.")
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
    is_cap: float | None = Field(
        2.0, gt=0, description="Off-policy correction when the rollout engine's log-probs are not the trainer's "
        "(vLLM, in bf16 or with its own kernels): each token's policy loss is weighted by min(pi_old / mu, is_cap), "
        "pi_old the trainer's and mu the engine's probability of the sampled token (truncated importance sampling, "
        "as TRL and verl apply it; the ratio's mean, min, max, p99 and capped share go to the metrics). The hf "
        "engine samples from the trainer's own model: no weights. null = off.")
    kl_ceiling: float | None = Field(
        25.0, gt=0, description="Fail the run (nothing saved) when a buffer's mean KL to p_SFT, in nats per "
        "response, exceeds this: checked on every iteration's samples and on the final actor's own samples after "
        "its last update. The default's run ends near 1; an actor trained at ppo.actor_lr 10 reached 98.7 and "
        "answered 'givinggiving...'. null = no ceiling.")
    max_repetitive_share: float = Field(
        0.5, gt=0, le=1, description="Fail the run (nothing saved) when more than this share of a buffer's "
        "responses are degenerate: at least 16 tokens made of a few 3-grams over and over (srppo/runtime/"
        "health.py). Checked on every iteration's samples and on the final actor's.")
    token_reward_ack: bool = Field(
        False, description="Must be true to use reward_mode='token' (known to blow up length, Appendix E).")
    checkpoint_every: int = Field(
        4, ge=0, description="Warm-up passes + PPO iterations between resumable checkpoints in "
        "data/checkpoints/ppo; 0 = off.")
    checkpoint_min_seconds: float = Field(
        60.0, ge=0, description="Skip a due checkpoint until this long after the last one (or the start): a save "
        "writes actor, critic and both optimizers' states (3.1 GB on the 135M model, 2-9 s here), so the "
        "default's 22 steps of 5-12 s checkpoint once or twice, not 5 times. 0 = every checkpoint_every steps.")

    @model_validator(mode="after")
    def _snapshots_inside_the_run(self):
        bad = [f for f in self.snapshots if not 0 < f < 1]
        if bad:
            raise ValueError(f"ppo.snapshots: fractions of the run strictly between 0 and 1 (the final actor is "
                             f"always saved); got {bad}")
        if len(set(snapshot_iterations(self.snapshots, self.iterations).values())) < len(self.snapshots):
            raise ValueError(f"ppo.snapshots {self.snapshots}: two fall on the same one of ppo.iterations="
                             f"{self.iterations}")
        return self

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


def snapshot_iterations(fractions: list[float], iterations: int) -> dict[str, int]:
    """{name: PPO iteration after which the actor is saved}: 0.25 of 63 -> {"25": 16}; at least iteration 1."""
    return {f"{round(100 * f):d}": max(1, round(f * iterations)) for f in sorted(fractions)}
