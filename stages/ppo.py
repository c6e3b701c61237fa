"""Stage `ppo`: Self-Rewarding PPO from p_SFT (Algorithm 2 with the coherent reward; with
`reward.source: model` the RM-PPO baseline).

usage: python stages/ppo.py BASE_DIR SFT_DIR PROMPTS_JSONL NORM_JSON ROLLOUTS_DIR OUT_DIR METRICS_JSON REPORT_JSON
       LIVE_DIR
Each critic warm-up buffer (under `warmup/`) and each PPO iteration goes to the DVCLive directory LIVE_DIR as
it ends, numbered on one step counter; the panels of LIVE_DIR/curves.png are drawn at the end.
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.io import atomic_dir, read_json
from srppo.methods.ppo.roles import ppo_roles
from srppo.methods.ppo.trainer import PPOTrainer, length_guard_tripped, prompt_stream
from srppo.models.loading import (
    context_length,
    load_tokenizer,
    save_pretrained,
    setup_runtime,
)
from srppo.models.lora import adapter_summary
from srppo.rollout.sampling import prompt_ids, rollout_engine, sampling_params
from srppo.runtime import distributed
from srppo.runtime.checkpoint import stage_checkpointer
from srppo.runtime.stage import (
    Timer,
    checkpoint_interval,
    load,
    log,
    progress,
    training_config,
    write_results,
)
from srppo.scoring.buffer import read_buffers
from srppo.scoring.rewards import RewardNormalizer

CURVES = ["reward_raw", "reward", "kl", "response_length", "eos_rate", "value_loss", "policy_loss",
          "clip_frac", "entropy", "approx_kl"]


def log_row(log_step, row: dict) -> None:
    """One history row to DVCLive: warm-up rows under `warmup/`, so that their curves stay apart."""
    log_step(row["step"], row, "warmup/" if row["phase"] == "warmup" else "")


def warm_up(trainer, buffers, history: list[dict], save, log_step) -> None:
    if trainer.critic_free:  # grpo / rloo / reinforce_pp never read V(s): nothing to warm up
        return
    done = sum(h["phase"] == "warmup" for h in history)  # > 0 when resumed
    for i, scored in enumerate(buffers[done:], start=done):
        history.append({"step": i + 1, "phase": "warmup", **trainer.warmup_critic(scored)})
        log_row(log_step, history[-1])
        log("ppo", f"warm-up {i + 1}: value_loss {history[-1]['value_loss']:.4f}")
        save()


def ppo_iterations(trainer, stream, cfg, history: list[dict], save, bar, log_step) -> tuple[list[dict], str | None]:
    ppo_rows = [h for h in history if h["phase"] == "ppo"]  # non-empty when resumed
    bar.update(len(ppo_rows))
    for it in range(len(ppo_rows), cfg.iterations):
        episode, batch = next(stream)
        row = {"step": len(history) + 1, "phase": "ppo", "episode": episode, **trainer.iteration(batch)}
        history.append(row)
        ppo_rows.append(row)
        log_row(log_step, row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_raw']:.2f}", kl=f"{row['kl']:.3f}", len=f"{row['response_length']:.0f}")
        if length_guard_tripped(ppo_rows, cfg.length_guard):
            stopped = f"length guard at iteration {it + 1}: responses grew past {cfg.length_guard}x"
            log("ppo", f"stopping early: {stopped}")
            return ppo_rows, stopped
        save()
    return ppo_rows, None


def engine_report(engine: str, ppo_rows: list[dict]) -> dict:
    """Rollout engine health: weight-sync cost and how far its log-probs were from the trainer's."""
    gaps = [r["engine_logprob_gap_max"] for r in ppo_rows if "engine_logprob_gap_max" in r]
    return {"engine": engine, "weight_sync_seconds_mean": sum(r["time_weight_sync"] for r in ppo_rows) / len(ppo_rows),
            "engine_logprob_gap_max": max(gaps) if gaps else None}


def summary(report: dict) -> dict:
    """The numbers `dvc exp show` compares across runs; the rest of the report stays in REPORT_JSON."""
    keys = ("iterations", "reward_raw_first", "reward_raw_last", "kl_last", "response_length_first",
            "response_length_last", "eos_rate_last", "reward_source")
    return {k: report[k] for k in keys}


def main(base_dir, sft_dir, prompts_path, norm_path, rollouts_dir, out_dir, metrics_path, report_path,
         live_dir) -> None:
    params = load()
    cfg, rcfg = params.ppo, params.rollouts
    distributed.relaunch_if_needed(params.runtime, __file__, sys.argv[1:])
    distributed.init(params.runtime)
    device, dtype = setup_runtime(params.runtime, return_freed_memory=True)  # four models: the peak binds
    timer = Timer("ppo")
    tok = load_tokenizer(sft_dir)
    prompts = prompt_ids(tok, read_jsonl(prompts_path), prompts_path, rcfg.max_new_tokens,
                         context_length(sft_dir))  # checked before any model is loaded
    # an engine with its own weights (vLLM) starts first: it sizes its KV cache from the free memory
    engine = None if rcfg.engine == "hf" else rollout_engine(rcfg, None, tok, sft_dir, params.runtime.seed, dtype)
    ds = lambda lr: training_config(params.runtime, cfg.mini_batch_size, 1, cfg.max_grad_norm, dtype, lr)
    coherent = params.reward.source == "coherent"
    roles_name = "actor, critic, p_SFT, " + ("p_PT" if coherent else "reward model")
    with timer.phase(f"load {roles_name}" + (" (LoRA views on one base)" if params.lora.enabled else "")):
        roles, actor_to_save = ppo_roles(params, base_dir, sft_dir, device, dtype,
                                         shard=lambda model: distributed.shard_frozen(model, ds(cfg.actor_lr)))
    engine = engine or rollout_engine(rcfg, roles.actor, tok, sft_dir, params.runtime.seed, dtype)
    trainer = PPOTrainer(roles, engine, tok, cfg, sampling_params(rcfg),
                         RewardNormalizer.from_dict(read_json(norm_path)), dump_dir=Path(out_dir).parent / "debug",
                         ds_actor=ds(cfg.actor_lr), ds_critic=ds(cfg.critic_lr),
                         forward_batch_size=rcfg.score_batch_size)
    ckpt = stage_checkpointer(out_dir, params, ["runtime", "ppo", "rollouts", "reward", "lora"],
                              [base_dir, sft_dir, prompts_path, norm_path, rollouts_dir,
                               *([] if coherent else [params.reward.model_path])],
                              checkpoint_interval(params.runtime, cfg.checkpoint_every, "ppo"),
                              lambda msg: log("ppo", msg))
    modules = {"actor": roles.actor, "critic": roles.critic}
    optims = {"actor": trainer.actor_opt, "critic": trainer.critic_opt}
    restored = ckpt.restore(modules, optims)
    history = (restored or {"history": []})["history"]
    trainer.actor_changed = restored is not None  # an engine with its own weights must pick up the resumed actor
    n_ppo = sum(h["phase"] == "ppo" for h in history)
    # a buffer holds buffer_size rollouts: group_size samples of buffer_size / group_size prompts
    stream = prompt_stream(prompts, rcfg.buffer_size // cfg.group_size, params.runtime.seed, n_ppo,
                           prompts_path)  # checks the size now
    # one counter over warm-up buffers and PPO iterations: the history length is the loop position
    save = lambda: ckpt.maybe_save(len(history), modules, optims, lambda: {"history": history})
    with live_curves(live_dir, distributed.is_main()) as log_step:
        for row in history:  # a resumed run's restored rows first: the curves start at step 1
            log_row(log_step, row)
        with timer.phase(f"critic warm-up on {cfg.critic_warmup_buffers} buffers"):
            warm_up(trainer, read_buffers(Path(rollouts_dir), cfg.critic_warmup_buffers, tok.pad_token_id, device),
                    history, save, log_step)
        with timer.phase(f"{cfg.iterations} PPO iterations"), progress(cfg.iterations, "ppo") as bar:
            ppo_rows, stopped = ppo_iterations(trainer, stream, cfg, history, save, bar, log_step)
    with timer.phase("save actor"), distributed.gathered(roles.actor), distributed.main_first() as main_rank:
        if main_rank:
            with atomic_dir(out_dir) as tmp:
                save_pretrained(actor_to_save(), tok, tmp)
    engine.close()
    if not distributed.is_main():
        return
    plots.curves(ppo_rows, CURVES, Path(live_dir) / "curves.png", "SRPPO training")
    first, last = ppo_rows[0], ppo_rows[-1]
    report = {
        "iterations": len(ppo_rows), "stopped_early": stopped,
        "reward_source": "coherent" if coherent else "reward model",
        "reward_raw_first": first["reward_raw"], "reward_raw_last": last["reward_raw"],
        "kl_last": last["kl"], "response_length_first": first["response_length"],
        "response_length_last": last["response_length"], "eos_rate_last": last["eos_rate"],
        "tokens_per_s": sum(r["tokens_per_s"] for r in ppo_rows) / len(ppo_rows),
        "processes": distributed.world_size(), **engine_report(rcfg.engine, ppo_rows),
        "lora": adapter_summary(sft_dir) if params.lora.enabled else None}
    write_results(metrics_path, report_path, summary(report), report, timer)
    ckpt.clear()


if __name__ == "__main__":
    main(*sys.argv[1:])
