"""One PPO iteration of Algorithm 2, and one critic warm-up buffer of §4.1 (the run around them, with
its guards and checkpoints, is run.py).

Phases per iteration (each timed, `PPOTrainer.seconds`): generate -> score (p_SFT, p_PT) -> make
experience (actor, critic) -> PPO epochs over mini-batches (actor and critic). The warm-up trains only
the critic, on buffers sampled from p_SFT by the `rollouts` stage: the actor equals p_SFT then, so its
log-probs and the KL term need no extra forward.

With `ppo.group_size` > 1 every prompt is sampled that many times (adjacent rows). A critic-free
estimator (grpo, rloo, reinforce_pp) drops the critic from all three places: no forward, no update,
no warm-up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from srppo.data.batch import collate, select_rows
from srppo.methods.ppo.estimators import CRITIC_FREE
from srppo.methods.ppo.experience import (
    Experience,
    build_experience,
    critic_values,
    logprob_gap,
    make_experience,
)
from srppo.methods.ppo.losses import kl_penalty, masked_mean, policy_loss, truncated_is_weights, value_loss
from srppo.models.logprobs import token_logprobs
from srppo.rollout.engine import SamplingParams
from srppo.runtime import distributed, health
from srppo.runtime.distributed import Stepper
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import Scored, engine_logprobs, in_chunks, score


class NumericError(RuntimeError):
    """NaN/inf in a reward or loss; a dump of the offending batch is written next to the outputs."""


@dataclass
class Roles:
    actor: torch.nn.Module
    critic: torch.nn.Module
    sft: torch.nn.Module   # frozen: KL reference and reward numerator
    pt: torch.nn.Module | None  # frozen: reward denominator (None under a reward model)
    reward_model: torch.nn.Module | None = None  # frozen: the RM-PPO baseline's reward instead of p_SFT/p_PT


def _micro(exp: Experience, idx: torch.Tensor):
    """Rows `idx` cut to their own width, and a function cutting any (B, T-1) buffer tensor the same way."""
    mb = select_rows(exp.batch, idx)
    width = mb.input_ids.shape[1] - 1
    return mb, lambda t: t[idx][:, :width]


def _check_finite(name: str, value: torch.Tensor, exp: Experience, dump_dir: Path | None):
    if torch.isfinite(value).all():
        return
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"input_ids": exp.batch.input_ids.cpu(), "reward_raw": exp.reward_raw.cpu(),
                    "logp_old": exp.logp_old.cpu(), "logp_sft": exp.logp_sft.cpu()},
                   dump_dir / "nonfinite_batch.pt")
    where = f"; batch dumped to {dump_dir / 'nonfinite_batch.pt'}" if dump_dir else ""
    raise NumericError(f"non-finite {name} ({value.flatten()[:8].tolist()}...){where}")


# What `PPOTrainer.seconds` holds after an iteration (seconds each): the engine's weight sync, sampling,
# the reward's p_SFT and p_PT forwards, the actor's (and critic's) no-grad forwards, the actor's and the
# critic's optimizer steps, the whole update phase, and the iteration.
ITERATION_PHASES = ("weight_sync", "generate", "score", "forward", "train_actor", "train_critic", "train", "total")


class PPOTrainer:
    def __init__(self, roles: Roles, engine, tok, cfg, sampling: SamplingParams,
                 normalizer: RewardNormalizer, dump_dir: Path | None = None,
                 ds_actor: dict | None = None, ds_critic: dict | None = None, forward_batch_size: int | None = None):
        """`ds_actor`/`ds_critic`: DeepSpeed configs (srppo.runtime.distributed) or None for plain torch.

        Every rank holds the whole buffer (a row-seeded engine samples 1/N of it per rank, others all
        of it; same seeds, same results) and scores all of it; each PPO mini-batch is split across
        ranks, with losses scaled to the global token mean.
        """
        self.roles, self.engine, self.tok, self.cfg = roles, engine, tok, cfg
        self.forward_batch_size = forward_batch_size  # rows per no-grad forward: bounds the logits' memory
        self.sampling, self.normalizer, self.dump_dir = sampling, normalizer, dump_dir
        self.device = next(roles.actor.parameters()).device
        self.actor_step = Stepper(roles.actor, cfg.actor_lr, 0.0, cfg.max_grad_norm, ds_actor)
        self.critic_step = Stepper(roles.critic, cfg.critic_lr, 0.0, cfg.max_grad_norm, ds_critic,
                                   param_groups=critic_param_groups(roles.critic, cfg.critic_lr, cfg.value_head_lr))
        self.actor_opt, self.critic_opt = self.actor_step.optimizer, self.critic_step.optimizer
        # the engine starts from p_SFT = the initial actor; after an update (or a resume) an engine
        # holding its own weights must be synced before it samples again
        self.actor_changed = False
        # grpo / rloo / reinforce_pp: no critic forward, update or warm-up (the critic just rides along)
        self.critic_free = cfg.estimator in CRITIC_FREE
        self._gap_pending = False  # set when logp_old came from the engine and is not yet checked
        self.seconds = dict.fromkeys(ITERATION_PHASES, 0.0)  # the last iteration's phases (ITERATION_PHASES)
        self.last_prompts: list[list[int]] | None = None  # the last iteration's prompts

    @contextmanager
    def _timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t

    # -- critic warm-up ---------------------------------------------------------------------
    def warmup_critic(self, scored: Scored, heldout: Scored | None = None) -> dict:
        """One pass over a warm-up buffer: the actor is frozen (= p_SFT, so the KL term is 0) and the critic
        regresses on the Monte Carlo returns of Eq. (6), without value clipping (a supervised fit: there is no
        earlier critic to stay near).

        The row: the buffer's explained variance and loss under the critic *before* its updates (data it has
        not seen), the mean training loss, and after the updates the loss and explained variance on
        `heldout`, a buffer the warm-up never trains on."""
        exp = self._warmup_experience(scored)
        before = self._fit(exp)
        stats = [self._critic_step(exp, idx, clip=None) for idx in self._minibatches(exp)]
        row = {**exp.info, **_mean(stats), "value_loss_before": before}
        if heldout is not None:
            held = self._warmup_experience(heldout)
            row.update(heldout_value_loss=self._fit(held), heldout_explained_variance=held.info["explained_variance"])
        return row

    def _warmup_experience(self, scored: Scored) -> Experience:
        values = in_chunks(lambda b: critic_values(self.roles.critic, b), scored.batch, self.forward_batch_size)
        # lambda = 1: the returns are the Monte Carlo returns whatever the critic says (Eq. 6's R_t)
        exp = build_experience(scored, scored.logp_sft, values, self.normalizer, self.cfg, lam=1.0)
        _check_finite("reward", exp.reward_raw, exp, self.dump_dir)
        return exp

    @staticmethod
    def _fit(exp: Experience) -> float:
        """Eq. (6)'s loss of the values the experience was built with: ½ mean (V - R)² over response tokens."""
        return value_loss(exp.values, exp.values, exp.returns, exp.mask, None)[0].item()

    # -- one PPO iteration --------------------------------------------------------------------
    def iteration(self, prompts: list[list[int]]) -> dict:
        """Sample, score and learn from one buffer; the row of metrics it logs. Its phases' seconds are
        left in `self.seconds` (ITERATION_PHASES) until the next iteration."""
        self.seconds = dict.fromkeys(ITERATION_PHASES, 0.0)
        self.last_prompts = prompts
        t0 = time.perf_counter()
        sync_s = 0.0
        if self.actor_changed:
            with distributed.gathered(self.roles.actor):  # ZeRO-3: full weights for the engine's copy
                sync_s = self.engine.sync_weights(self.roles.actor)
        prompts, groups = repeat_prompts(prompts, self.cfg.group_size, self.device)
        gens = distributed.generate_sharded(self.engine, prompts, self.sampling)
        t1 = time.perf_counter()
        with self._timed("score"):
            scored = score(gens, self.roles.sft, self.roles.pt, self.tok.pad_token_id, self.device,
                           self.forward_batch_size, self.roles.reward_model)
        from_engine = engine_logprobs(gens, scored.logp_sft)
        reuse = from_engine is not None and (self.cfg.logp_old == "engine" or (
            self.cfg.logp_old == "auto" and getattr(self.engine, "logprobs_match_trainer", False)))
        with self._timed("forward"):
            exp = make_experience(self.roles.actor, self.roles.critic, scored, self.normalizer, self.cfg,
                                  self.sampling.temperature, groups, self.forward_batch_size,
                                  logp_old=from_engine if reuse else None)
        if from_engine is not None and not reuse:
            exp.info.update(logprob_gap(from_engine, exp.logp_old, exp.mask))
            if self.cfg.is_cap is not None:  # the engine sampled from another distribution than pi_old: correct it
                exp.is_weights, is_info = truncated_is_weights(exp.logp_old, from_engine, exp.mask.float(),
                                                               self.cfg.is_cap)
                exp.info.update(is_info)
        exp.info["repetitive_share"] = health.repetitive_share([g.response_ids for g in gens])
        # with the engine's log-probs as logp_old, the first actor forward (before any step) checks them
        self._gap_pending = reuse
        _check_finite("reward", exp.reward_raw, exp, self.dump_dir)
        t2 = time.perf_counter()
        stats = []
        for _ in range(self.cfg.ppo_epochs):
            for idx in self._minibatches(exp):
                with self._timed("train_actor"):
                    row = self._actor_step(exp, idx)
                if not self.critic_free:
                    with self._timed("train_critic"):
                        row.update(self._critic_step(exp, idx))
                stats.append(row)
        t3 = time.perf_counter()
        self.seconds.update(weight_sync=sync_s, generate=t1 - t0 - sync_s, train=t3 - t2, total=t3 - t0)
        timing = {"time_weight_sync": sync_s, "time_generate": t1 - t0 - sync_s, "time_experience": t2 - t1,
                  "time_train": t3 - t2}
        tokens = exp.batch.attention_mask.sum().item()
        return {**exp.info, **_mean(stats), **timing, "tokens_per_s": tokens / (t3 - t0)}

    @torch.no_grad()
    def probe(self, prompts: list[list[int]]) -> dict:
        """The final actor on prompts it has not trained on (after its last update): its own samples' KL to p_SFT
        (nats per response, the k1 estimate PPO's penalty uses), their repetitive share, and the finiteness of
        its log-probs. Costs one engine call and one forward (two where the engine's log-probs are not the
        actor's)."""
        if self.actor_changed:
            with distributed.gathered(self.roles.actor):
                self.engine.sync_weights(self.roles.actor)
            self.actor_changed = False
        prompts, _ = repeat_prompts(prompts, self.cfg.group_size, self.device)
        gens = distributed.generate_sharded(self.engine, prompts, self.sampling)
        batch = collate([g.prompt_ids for g in gens], [g.response_ids for g in gens], self.tok.pad_token_id)
        batch = batch.to(self.device)
        logp_of = lambda model, t=1.0: in_chunks(lambda b: token_logprobs(model, b, temperature=t), batch,
                                                 self.forward_batch_size)
        # the engine's log-probs are the actor's own where they match the trainer's (hf engine): one forward less
        recorded = engine_logprobs(gens, batch.action_mask.float()) \
            if getattr(self.engine, "logprobs_match_trainer", False) else None
        logp = recorded * batch.action_mask if recorded is not None else logp_of(self.roles.actor,
                                                                                 self.sampling.temperature)
        mask = batch.action_mask
        return {"kl": kl_penalty(logp, logp_of(self.roles.sft), mask).sum(-1).mean().item(),
                "repetitive_share": health.repetitive_share([g.response_ids for g in gens]),
                "logprobs_finite": bool(torch.isfinite(logp).all())}

    def _minibatches(self, exp: Experience):
        """Global mini-batches (the same permutation on every rank), each cut down to this rank's rows.

        With ppo.group_by_length, rows of similar length share a mini-batch (in random order of mini-batches):
        each forward is as wide as its longest row, so mixing lengths pays for padding."""
        perm = torch.randperm(exp.batch.input_ids.shape[0], device=self.device)
        if self.cfg.group_by_length:
            perm = perm[torch.argsort(exp.batch.attention_mask[perm].sum(-1), stable=True)]
        batches = perm.split(self.cfg.mini_batch_size)
        if self.cfg.group_by_length:
            batches = [batches[i] for i in torch.randperm(len(batches), device=self.device).tolist()]
        return [distributed.shard(mb) for mb in batches]

    def _actor_step(self, exp: Experience, idx) -> dict:
        def loss_fn(micro):
            mb, cut = _micro(exp, micro)
            mask = mb.action_mask
            logp, entropy = token_logprobs(self.roles.actor, mb, with_entropy=True,
                                           temperature=self.sampling.temperature)
            if self._gap_pending:  # the actor is still the sampling policy here
                exp.info.update(logprob_gap(logp.detach(), cut(exp.logp_old), mask))
                self._gap_pending = False
            loss, metrics = policy_loss(logp, cut(exp.logp_old), cut(exp.advantages), mask, self.cfg.clip_eps,
                                        None if exp.is_weights is None else cut(exp.is_weights))
            _check_finite("policy loss", loss, exp, self.dump_dir)
            metrics["entropy"] = masked_mean(entropy, mask).item()
            return loss, metrics
        metrics, grad_norm = self._update(self.actor_step, exp, idx, loss_fn)
        self.actor_changed = True
        return {**metrics, "actor_grad_norm": grad_norm}

    def _critic_step(self, exp: Experience, idx, clip: float | None | str = "config") -> dict:
        """One critic step; `clip`: the value clip ("config": ppo.value_clip; None: off, as in the warm-up)."""
        clip = self.cfg.value_clip if clip == "config" else clip

        def loss_fn(micro):
            mb, cut = _micro(exp, micro)
            values = self.roles.critic(mb.input_ids, mb.attention_mask)[:, :-1]
            loss, metrics = value_loss(values, cut(exp.values), cut(exp.returns), mb.action_mask, clip)
            _check_finite("value loss", loss, exp, self.dump_dir)
            return loss, metrics
        return self._update(self.critic_step, exp, idx, loss_fn)[0]

    def _update(self, stepper: Stepper, exp: Experience, idx, loss_fn) -> tuple[dict, float | None]:
        """One optimizer step on this rank's rows `idx` of a mini-batch, `ppo.micro_batch_size` rows per
        forward with gradient accumulation; each micro-batch's token-mean loss is weighted by its share
        of the mini-batch's tokens on all ranks, so the step equals one over the whole mini-batch."""
        micros = idx.split(self.cfg.micro_batch_size) if self.cfg.micro_batch_size else [idx]
        n_global = distributed.all_sum(float(exp.mask[idx].sum()))
        parts, grad_norm = [], None
        for k, micro in enumerate(micros):
            loss, metrics = loss_fn(micro)
            n = float(exp.mask[micro].sum())
            grad_norm = stepper.backward_step(loss * distributed.loss_share(n, n_global), boundary=k == len(micros) - 1)
            parts.append((metrics, n))
        n_local = sum(n for _, n in parts)
        merged = parts[0][0] if len(parts) == 1 else {
            key: sum(m[key] * n for m, n in parts) / max(n_local, 1.0) for key in parts[0][0]}
        return _global(merged, n_local, n_global), grad_norm


def critic_param_groups(critic, lr: float, head_lr: float | None) -> list[dict] | None:
    """The critic's body at `lr` and its value head at `head_lr` (None: one group at `lr`).

    The head starts at zero on top of p_SFT's features: at the body's learning rate (the paper's 9e-6)
    it takes hundreds of steps to learn even the returns' scale, which a short warm-up does not have."""
    if head_lr is None:
        return None
    head = list(critic.value_head.parameters())
    ids = {id(p) for p in head}
    return [{"params": [p for p in critic.parameters() if id(p) not in ids], "lr": lr},
            {"params": head, "lr": head_lr}]


def repeat_prompts(prompts: list[list[int]], group_size: int, device) -> tuple[list[list[int]], torch.Tensor | None]:
    """Each prompt `group_size` times in a row, and each row's group id (None for one sample per prompt).

    Adjacent rows keep a group easy to read in dumps; the estimators only rely on the ids. For a
    buffer of rollouts.buffer_size rows, the caller hands in buffer_size // group_size prompts.
    """
    if group_size == 1:
        return prompts, None
    rows = [p for p in prompts for _ in range(group_size)]
    return rows, torch.arange(len(prompts), device=device).repeat_interleave(group_size)  # (B * group_size,)


def _global(metrics: dict, n_local: float, n_global: float) -> dict:
    """Token-weighted means over all ranks of per-rank token means (identity for one process)."""
    if distributed.world_size() == 1:
        return metrics
    return {k: distributed.all_sum(v * n_local) / max(n_global, 1.0) for k, v in metrics.items()}


def _mean(rows: list[dict]) -> dict:
    if not rows:
        return {}
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
