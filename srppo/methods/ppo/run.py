"""One PPO run, Algorithm 2 from p_SFT to the trained actor: `run_ppo` is the `ppo` stage's one library call.

In order: the prompts (checked against the context before any model loads), the rollout engine and the
four roles, the trainer; then, resumed from a checkpoint when one matches, the critic warm-up of §4.1 on
the `rollouts` stage's buffers and `ppo.iterations` PPO iterations, each followed by a checkpoint when
due, stopping early when the length guard (Appendix E) trips. One step counter runs over warm-up buffers
and PPO iterations: the history's length is the loop position a checkpoint records.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from srppo.config.ppo import snapshot_iterations
from srppo.data.records import DataError, read_jsonl
from srppo.io import read_json
from srppo.methods.ppo.roles import ppo_roles
from srppo.methods.ppo.trainer import PPOTrainer, Roles
from srppo.models.loading import context_length, load_tokenizer
from srppo.rollout.sampling import engine_name, prompt_ids, rollout_engine, sampling_params
from srppo.runtime import distributed, health
from srppo.runtime.checkpoint import Checkpointer
from srppo.runtime.stage import Timer, log, progress, training_config
from srppo.scoring.buffer import read_buffers
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.rollouts import warmup_prompt_split

# (prompts, start) -> (episode, prompt batch) from the start-th batch on
Stream = Callable[[list[list[int]], int], Iterator[tuple[int, list[list[int]]]]]


@dataclass
class PPOInputs:
    """What a PPO run reads (the `ppo` stage's input arguments)."""

    base: str | Path          # p_PT: the reward's denominator (and, under LoRA, the shared base)
    sft: str | Path           # p_SFT: actor and critic start here; KL reference and the reward's numerator
    prompts: str | Path       # PPO prompt records (JSONL)
    reward_norm: str | Path   # the normaliser the `calibrate` stage fitted (JSON)
    rollouts: str | Path | None  # the `rollouts` stage's buffers, for the critic warm-up (None: no warm-up)


@dataclass
class PPOResult:
    history: list[dict]       # every step's row in order: warm-up buffers, then PPO iterations (a resumed
                              # run's restored rows included)
    stopped: str | None       # why PPO stopped before ppo.iterations (the length guard), else None
    roles: Roles              # actor, critic, p_SFT, p_PT / reward model, as trained
    actor_to_save: Callable[[], torch.nn.Module]  # the actor as a plain model (under LoRA: merged into the base)
    tokenizer: object
    seconds: dict[str, float] = field(default_factory=dict)  # the run's phases: loading, warm-up, iterations
    iteration_seconds: list[dict] = field(default_factory=list)  # each PPO iteration this call ran:
                                                                  # PPOTrainer.seconds (ITERATION_PHASES)
    engine: object = None     # the rollout engine, still open: close() it once the actor is saved
    final_check: dict = field(default_factory=dict)  # the final actor's probe after its last update (check_final)

    def close(self) -> None:
        """Shut the rollout engine down. After saving the actor: vLLM's shutdown also tears down the process
        group that gathering a ZeRO-3 actor and the ranks' barriers need."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    @property
    def ppo_rows(self) -> list[dict]:
        return [h for h in self.history if h["phase"] == "ppo"]


def run_ppo(params, inputs: PPOInputs, device, dtype, *, ckpt: Checkpointer | None = None,
            timer: Timer | None = None, on_row: Callable[[dict], None] | None = None,
            dump_dir: Path | None = None, stream: Stream | None = None,
            on_snapshot: Callable[..., None] | None = None) -> PPOResult:
    """PPO with params' `ppo`, `rollouts`, `reward`, `lora` and `runtime` sections, on `device`/`dtype`
    (srppo.models.loading.setup_runtime); under several processes, every rank calls it.

    `ckpt` restores the actor, critic, both optimizers, the RNG states and the history when its
    fingerprint matches, and saves them every `checkpoint_every` steps (the caller clears it once the
    outputs are written). `timer` gets the phases (a fresh "ppo" one if None). `on_row(row)` sees each
    step's row once and in order as the step ends, a resumed run's restored rows first. A NaN/inf stops the
    run with a dump of the batch in `dump_dir`. `stream` is a hook for benchmarks: it replaces the seeded,
    shuffled passes over the prompts (`prompt_stream`) with batches of its own. `on_snapshot(name, iteration,
    actor, actor_to_save, tokenizer)` is called on every rank after each iteration `ppo.snapshots` names (not again for those a resumed run had
    done): the caller saves the actor there.
    """
    cfg, rcfg = params.ppo, params.rollouts
    timer = timer or Timer("ppo")
    tok = load_tokenizer(inputs.sft)
    prompts = prompt_ids(tok, read_jsonl(inputs.prompts), str(inputs.prompts), rcfg.max_new_tokens,
                         context_length(inputs.sft))  # checked before any model is loaded
    trainer, actor_to_save = _build(params, inputs, tok, device, dtype, timer, dump_dir)
    modules = {"actor": trainer.roles.actor, "critic": trainer.roles.critic}
    optims = {"actor": trainer.actor_opt, "critic": trainer.critic_opt}
    engines = {"actor": trainer.actor_step.engine, "critic": trainer.critic_step.engine}  # DeepSpeed's, or None
    restored = ckpt.restore(modules, optims, engines) if ckpt else None
    history = (restored or {"history": []})["history"]
    trainer.actor_changed = restored is not None  # an engine with its own weights must pick up the resumed actor
    n_ppo = sum(h["phase"] == "ppo" for h in history)
    # a buffer holds buffer_size rollouts: group_size samples of buffer_size / group_size prompts
    per_buffer = rcfg.buffer_size // cfg.group_size
    # the prompts the `rollouts` stage sampled for the critic's warm-up are not PPO's
    _, own = warmup_prompt_split(len(prompts), params.runtime.seed, rcfg.n_buffers * rcfg.buffer_size, per_buffer)
    batches = (stream or (lambda ids, start: prompt_stream(ids, per_buffer, params.runtime.seed, start,
                                                           str(inputs.prompts))))
    batches = batches([prompts[i] for i in own], n_ppo)  # prompt_stream checks the prompt count now
    save = lambda: ckpt and ckpt.maybe_save(len(history), modules, optims, lambda: {"history": history}, engines)
    emit = on_row or (lambda row: None)
    for row in history:  # a resumed run's restored rows first: the curves start at step 1
        emit(row)
    n_warmup = cfg.critic_warmup_buffers
    with timer.phase(f"critic warm-up on {n_warmup} buffers"):
        # one buffer more than the warm-up trains on, when the `rollouts` stage made it: held out
        n_read = min(n_warmup + 1, rcfg.n_buffers) if n_warmup else 0
        buffers = read_buffers(Path(inputs.rollouts), n_read, tok.pad_token_id, device) if n_read else []
        warm_up(trainer, buffers[:n_warmup], buffers[n_warmup] if n_read > n_warmup else None, history, save, emit)
    iteration_seconds = []
    with timer.phase(f"{cfg.iterations} PPO iterations"), progress(cfg.iterations, "ppo") as bar:
        snapshot = on_snapshot and (lambda name, it: on_snapshot(name, it, trainer.roles.actor, actor_to_save, tok))
        stopped = ppo_iterations(trainer, batches, cfg, history, save, bar, emit, iteration_seconds, snapshot)
    with timer.phase("final check"):  # on the stream's next batch (a finite stream's last one when it ran out)
        final = check_final(trainer, next(batches, (None, trainer.last_prompts))[1], len(history))
    return PPOResult(history, stopped, trainer.roles, actor_to_save, tok, dict(timer.phases), iteration_seconds,
                     trainer.engine, final)


def _build(params, inputs: PPOInputs, tok, device, dtype, timer: Timer, dump_dir: Path | None):
    """The rollout engine, the four roles and the trainer; and a function giving the actor to save."""
    cfg, rcfg, seed = params.ppo, params.rollouts, params.runtime.seed
    # an engine with its own weights (vLLM) starts first: it sizes its KV cache from the free memory
    which = dict(trains=True, shared_base=params.lora.enabled,
                 tokens=cfg.iterations * rcfg.buffer_size * rcfg.max_new_tokens)
    engine = (None if engine_name(rcfg, inputs.sft, **which) == "hf"
              else rollout_engine(rcfg, None, tok, inputs.sft, seed, dtype, **which))
    ds = lambda lr: training_config(params.runtime, cfg.mini_batch_size, 1, cfg.max_grad_norm, dtype, lr)
    roles_name = "actor, critic, p_SFT, " + ("p_PT" if params.reward.source == "coherent" else "reward model")
    with timer.phase(f"load {roles_name}" + (" (LoRA views on one base)" if params.lora.enabled else "")):
        roles, actor_to_save = ppo_roles(params, inputs.base, inputs.sft, device, dtype,
                                         shard=lambda model: distributed.shard_frozen(model, ds(cfg.actor_lr)))
    engine = engine or rollout_engine(rcfg, roles.actor, tok, inputs.sft, seed, dtype, **which)
    trainer = PPOTrainer(roles, engine, tok, cfg, sampling_params(rcfg),
                         RewardNormalizer.from_dict(read_json(inputs.reward_norm)), dump_dir=dump_dir,
                         ds_actor=ds(cfg.actor_lr), ds_critic=ds(cfg.critic_lr),
                         forward_batch_size=rcfg.score_batch_size)
    return trainer, actor_to_save


def warm_up(trainer: PPOTrainer, buffers, heldout, history: list[dict], save, emit) -> None:
    """The critic regresses on p_SFT's own buffers before PPO starts (the actor is p_SFT then):
    `ppo.critic_warmup_epochs` sweeps over all of them, one pass per buffer and row, so that the last
    buffers do not pull the critic toward their own few samples. After each pass its fit on the `heldout`
    buffer (None: no held-out buffer) says whether it learned or memorised."""
    if trainer.critic_free:  # grpo / rloo / reinforce_pp never read V(s): nothing to warm up
        return
    schedule = [(epoch, i) for epoch in range(trainer.cfg.critic_warmup_epochs) for i in range(len(buffers))]
    done = sum(h["phase"] == "warmup" for h in history)  # > 0 when resumed
    for step, (epoch, i) in enumerate(schedule[done:], start=done):
        if warmup_stalled(history, trainer.cfg.critic_warmup_patience, len(buffers)):
            log("ppo", f"warm-up stopped after {step} of {len(schedule)} passes: the held-out value loss has not "
                f"improved for {trainer.cfg.critic_warmup_patience} passes (ppo.critic_warmup_patience)")
            break
        row = trainer.warmup_critic(buffers[i], heldout)
        history.append({"step": step + 1, "phase": "warmup", "epoch": epoch + 1, "buffer": i, **row})
        emit(history[-1])
        held = (f", held out: value_loss {row['heldout_value_loss']:.4f}, explained variance "
                f"{row['heldout_explained_variance']:.3f}" if heldout is not None else "")
        log("ppo", f"warm-up sweep {epoch + 1}, buffer {i + 1}: value_loss {row['value_loss_before']:.4f} before, "
            f"{row['value_loss']:.4f} training{held}")
        save()


def warmup_stalled(history: list[dict], patience: int | None, first_sweep: int) -> bool:
    """Whether the warm-up rows in `history` (a resumed run's included) have gone `patience` passes without a
    new best held-out value loss, counted once the first sweep of `first_sweep` passes is done."""
    losses = [h["heldout_value_loss"] for h in history if h["phase"] == "warmup" and "heldout_value_loss" in h]
    if patience is None or not losses or len(losses) < first_sweep:
        return False
    return len(losses) - 1 - losses.index(min(losses)) >= patience


def ppo_iterations(trainer: PPOTrainer, batches, cfg, history: list[dict], save, bar, emit,
                   iteration_seconds: list[dict], on_snapshot=None) -> str | None:
    """PPO iterations up to `cfg.iterations` (a resumed run's count included); why they stopped early, or None."""
    ppo_rows = [h for h in history if h["phase"] == "ppo"]  # non-empty when resumed
    due = {it: name for name, it in snapshot_iterations(cfg.snapshots, cfg.iterations).items()}
    bar.update(len(ppo_rows))
    for it in range(len(ppo_rows), cfg.iterations):
        episode, batch = next(batches)
        row = {"step": len(history) + 1, "phase": "ppo", "episode": episode, **trainer.iteration(batch)}
        iteration_seconds.append(dict(trainer.seconds))
        history.append(row)
        ppo_rows.append(row)
        emit(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_raw']:.2f}", kl=f"{row['kl']:.3f}", len=f"{row['response_length']:.0f}")
        check_iteration(row, cfg)
        if length_guard_tripped(ppo_rows, cfg.length_guard):
            stopped = f"length guard at iteration {it + 1}: responses grew past {cfg.length_guard}x"
            log("ppo", f"stopping early: {stopped}")
            return stopped
        if on_snapshot and it + 1 in due:  # before the checkpoint: a resumed run never lacks a snapshot it passed
            on_snapshot(due[it + 1], it + 1)
        save()
    return None


ADVICE = ("Lower ppo.actor_lr or raise ppo.kl_coef; if the drift is wanted, raise ppo.kl_ceiling or "
          "ppo.max_repetitive_share.")


def check_iteration(row: dict, cfg) -> None:
    """A PPO iteration's numeric health (srppo.runtime.health): its samples (drawn by the actor as the previous
    update left it) within the KL ceiling and not mostly repetitive, the actor's gradient norm and the KL
    finite. Losses and rewards are checked inside the trainer, before each step."""
    check_drift(row["step"], row, cfg)
    health.check_finite("ppo", row["step"], ADVICE, actor_grad_norm=row.get("actor_grad_norm"))


def check_drift(step: int, probe: dict, cfg, what: str = "the buffer's") -> None:
    health.check_finite("ppo", step, ADVICE, **{f"{what} KL to p_SFT": probe["kl"]})
    if cfg.kl_ceiling is not None and probe["kl"] > cfg.kl_ceiling:
        raise health.fail("ppo", step, f"{what} KL to p_SFT, {probe['kl']:.3g} nats per response, is over "
                          f"ppo.kl_ceiling={cfg.kl_ceiling:g}", ADVICE)
    if probe["repetitive_share"] > cfg.max_repetitive_share:
        raise health.fail("ppo", step, f"{probe['repetitive_share']:.0%} of {what} responses repeat a few tokens over "
                          f"and over (ppo.max_repetitive_share={cfg.max_repetitive_share:g})", ADVICE)


def check_final(trainer: PPOTrainer, prompts: list[list[int]], step: int) -> dict:
    """After the last update: every weight of actor and critic finite, and the final actor's own samples on
    prompts it has not trained on (the stream's next batch) within the same limits as each iteration's."""
    for what, model in (("the actor", trainer.roles.actor), ("the critic", trainer.roles.critic)):
        health.check_parameters("ppo", step, model, what, ADVICE)
    probe = trainer.probe(prompts)
    if not probe["logprobs_finite"]:
        raise health.fail("ppo", step, "the final actor's log-probs of its own samples hold NaN/inf", ADVICE)
    check_drift(step, probe, trainer.cfg, "the final actor's")
    return probe


def length_guard_tripped(history: list[dict], factor: float) -> bool:
    """Appendix E's failure: responses keep growing until nearly all hit the token budget."""
    if len(history) < 2:
        return False
    first, last = history[0]["response_length"], history[-1]["response_length"]
    return last > factor * max(first, 1.0) and last > 0 and history[-1]["eos_rate"] < 0.5


def prompt_stream(prompts: list[list[int]], batch: int, seed: int, start: int = 0, source: str = "PPO prompts"):
    """Endless shuffled passes (episodes) over the prompt set, `batch` prompts at a time.

    `start` skips that many batches: the shuffles come from `seed` alone, so a resumed run sees
    exactly the batches an uninterrupted one would.
    """
    if len(prompts) < batch:
        raise DataError(f"{source}: {len(prompts)} prompt(s), fewer than rollouts.buffer_size={batch}; "
                        f"add prompts or lower rollouts.buffer_size")
    return _batches(prompts, batch, seed, start)  # a plain function: the check above runs on the call


def _batches(prompts: list[list[int]], batch: int, seed: int, start: int):
    rng = random.Random(seed)
    episode, produced = 0, 0
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for s in range(0, len(order) - batch + 1, batch):
            if produced >= start:
                yield episode, [prompts[i] for i in order[s : s + batch]]
            produced += 1
        episode += 1
