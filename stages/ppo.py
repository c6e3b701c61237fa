"""Stage `ppo`: Self-Rewarding PPO from p_SFT (Algorithm 2 with the coherent reward; with
`reward.source: model` the RM-PPO baseline).

usage: python stages/ppo.py BASE_DIR SFT_DIR PROMPTS_JSONL NORM_JSON ROLLOUTS_DIR OUT_DIR METRICS_JSON REPORT_JSON
       LIVE_DIR
Each critic warm-up buffer (under `warmup/`) and each PPO iteration goes to the DVCLive directory LIVE_DIR as
it ends, numbered on one step counter; the panels of LIVE_DIR/curves.png are drawn at the end.
With ppo.snapshots, the actor along the run goes to OUT_DIR/snapshots/<percent>/ too (staged while the run goes
in OUT_DIR/../snapshots/<name>/, where a resumed run finds the ones it passed); a snapshot the run stopped before
(the length guard) is a folder with only snapshot.json, `"reached": false`.
Derived from OUT_DIR, next to it and not part of it: resumable checkpoints in OUT_DIR/../checkpoints/<name>
(deleted when the stage succeeds) and, when a reward or loss turns NaN/inf, the offending batch in
OUT_DIR/../debug/<name>/nonfinite_batch.pt (<name>: OUT_DIR's last component, e.g. data/debug/ppo/).
"""

import shutil
import sys
from pathlib import Path

from live_curves import live_curves

from srppo.config.ppo import snapshot_iterations
from srppo.evaluation import plots
from srppo.io import atomic_dir, read_json, write_json
from srppo.methods.ppo.run import PPOInputs, run_ppo
from srppo.models.loading import save_pretrained, setup_runtime
from srppo.models.lora import adapter_summary
from srppo.rollout.sampling import engines_used
from srppo.runtime import distributed
from srppo.runtime.checkpoint import stage_checkpointer
from srppo.runtime.stage import (
    Timer,
    beside_output,
    load,
    log,
    write_results,
)

CURVES = ["reward_raw", "reward", "kl", "response_length", "eos_rate", "value_loss", "explained_variance",
          "policy_loss", "clip_frac", "entropy", "approx_kl"]
WARMUP_CURVES = ["value_loss_before", "value_loss", "heldout_value_loss", "heldout_explained_variance"]
SECTIONS = ["runtime", "ppo", "rollouts", "reward", "lora"]  # what the checkpoint's fingerprint covers


def engine_report(engine: str, ppo_rows: list[dict]) -> dict:
    """Rollout engine health: weight-sync cost and how far its log-probs were from the trainer's."""
    gaps = [r["engine_logprob_gap_max"] for r in ppo_rows if "engine_logprob_gap_max" in r]
    return {"engine": engine, "weight_sync_seconds_mean": sum(r["time_weight_sync"] for r in ppo_rows) / len(ppo_rows),
            "engine_logprob_gap_max": max(gaps) if gaps else None}


def summary(report: dict) -> dict:
    """The numbers `dvc exp show` compares across runs; the rest of the report stays in REPORT_JSON."""
    keys = ("iterations", "reward_raw_first", "reward_raw_last", "kl_last", "response_length_first",
            "response_length_last", "eos_rate_last", "reward_source", "kl_coef_per_reward_nat",
            "warmup_value_loss_first", "warmup_value_loss_last", "warmup_heldout_explained_variance")
    return {k: report[k] for k in keys}


def warmup_report(rows: list[dict]) -> dict:
    """How far the critic got before PPO: its training loss on the first and the last warm-up pass, and its
    fit on the held-out buffer after the first and the last (None without a warm-up or a held-out buffer)."""
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    return {"warmup_passes": len(rows), "warmup_value_loss_first": first.get("value_loss"),
            "warmup_value_loss_last": last.get("value_loss"),
            "warmup_value_loss_before_first": first.get("value_loss_before"),
            "warmup_value_loss_before_last": last.get("value_loss_before"),
            "warmup_heldout_value_loss_first": first.get("heldout_value_loss"),
            "warmup_heldout_value_loss": last.get("heldout_value_loss"),
            "warmup_heldout_explained_variance": last.get("heldout_explained_variance")}


def snapshot_saver(staging: Path, run_fingerprint: str):
    """on_snapshot for run_ppo: every rank gathers the actor (ZeRO-3), the main one writes it to staging/<name>
    with the run's fingerprint, so that a later run with other params or inputs never picks it up."""
    def save(name: str, iteration: int, actor, actor_to_save, tokenizer) -> None:
        with distributed.gathered(actor), distributed.main_first() as main_rank:
            if main_rank:
                with atomic_dir(staging / name) as tmp:
                    save_pretrained(actor_to_save(), tokenizer, tmp)
                    write_json(tmp / "snapshot.json", {"fingerprint": run_fingerprint, "iteration": iteration})
                log("ppo", f"snapshot {name} % (iteration {iteration}) saved")
    return save


def snapshot_report(staging: Path, run_fingerprint: str, planned: dict[str, int], ppo_rows: list[dict],
                    final_check: dict, buffer_size: int) -> dict:
    """{name: iteration, rollouts seen, KL to p_SFT} for each of the `planned` snapshots ({name: iteration}) this
    run staged, and "100" for the final actor. A snapshot's KL is that of its own samples: the next iteration's
    buffer (for the final actor: the final check's samples on prompts it has not trained on), in nats per
    response. A snapshot the run never reached (the length guard stopped it first) says so: `reached` false."""
    out = {}
    for name, it in planned.items():
        meta = staging / name / "snapshot.json"
        staged = meta.is_file() and read_json(meta).get("fingerprint") == run_fingerprint
        if staged and it < len(ppo_rows):
            out[name] = {"iteration": it, "rollouts": it * buffer_size, "kl": ppo_rows[it]["kl"],
                         "reward_raw": ppo_rows[it]["reward_raw"], "reached": True}
        else:
            out[name] = {"iteration": it, "reached": False}
    out["100"] = {"iteration": len(ppo_rows), "rollouts": len(ppo_rows) * buffer_size, "kl": final_check.get("kl"),
                  "reward_raw": None, "reached": True}
    return out


def main(base_dir, sft_dir, prompts_path, norm_path, rollouts_dir, out_dir, metrics_path, report_path,
         live_dir) -> None:
    params = load()
    distributed.relaunch_if_needed(params.runtime, __file__, sys.argv[1:])
    distributed.init(params.runtime)
    device, dtype = setup_runtime(params.runtime, return_freed_memory=True)  # four models: the peak binds
    timer = Timer("ppo")
    inputs = PPOInputs(base_dir, sft_dir, prompts_path, norm_path, rollouts_dir)
    coherent = params.reward.source == "coherent"
    ckpt = stage_checkpointer(out_dir, params, SECTIONS, [base_dir, sft_dir, prompts_path, norm_path, rollouts_dir,
                                                          *([] if coherent else [params.reward.model_path])],
                              params.ppo.checkpoint_every,
                              lambda msg: log("ppo", msg), params.ppo.checkpoint_min_seconds)
    staging = beside_output(out_dir, "snapshots")
    with live_curves(live_dir, distributed.is_main()) as log_step:
        # warm-up rows under `warmup/`, so that their curves stay apart from the PPO iterations'
        run = run_ppo(params, inputs, device, dtype, ckpt=ckpt, timer=timer, dump_dir=beside_output(out_dir, "debug"),
                      on_row=lambda row: log_step(row["step"], row, "warmup/" if row["phase"] == "warmup" else ""),
                      on_snapshot=snapshot_saver(staging, ckpt.fp))
    planned = snapshot_iterations(params.ppo.snapshots, params.ppo.iterations)
    snapshots = snapshot_report(staging, ckpt.fp, planned, run.ppo_rows, run.final_check, params.rollouts.buffer_size)
    with timer.phase("save actor"), distributed.gathered(run.roles.actor), distributed.main_first() as main_rank:
        if main_rank:
            with atomic_dir(out_dir) as tmp:
                save_pretrained(run.actor_to_save(), run.tokenizer, tmp)
                for name in planned:
                    if snapshots[name]["reached"]:
                        shutil.copytree(staging / name, tmp / "snapshots" / name)
                    else:  # a folder all the same (the eval stage's input), holding why it has no weights
                        write_json(tmp / "snapshots" / name / "snapshot.json",
                                   {"iteration": planned[name], "reached": False, "stopped_early": run.stopped})
    run.close()  # after the save: vLLM's shutdown takes the process group with it
    if not distributed.is_main():
        return
    ppo_rows = run.ppo_rows
    plots.curves(ppo_rows, CURVES, Path(live_dir) / "curves.png", "SRPPO training")
    warmup_rows = [h for h in run.history if h["phase"] == "warmup"]
    if warmup_rows:
        plots.curves(warmup_rows, [c for c in WARMUP_CURVES if c in warmup_rows[0]],
                     Path(live_dir) / "warmup.png", "Critic warm-up (before PPO)")
    first, last = ppo_rows[0], ppo_rows[-1]
    report = {
        "iterations": len(ppo_rows), "stopped_early": run.stopped,
        "reward_source": "coherent" if coherent else "reward model",
        "reward_raw_first": first["reward_raw"], "reward_raw_last": last["reward_raw"],
        "kl_last": last["kl"], "kl_coef_per_reward_nat": last["kl_coef_per_reward_nat"],
        "response_length_first": first["response_length"],
        "response_length_last": last["response_length"], "eos_rate_last": last["eos_rate"],
        "tokens_per_s": sum(r["tokens_per_s"] for r in ppo_rows) / len(ppo_rows),
        "processes": distributed.world_size(), **engine_report(engines_used(), ppo_rows),
        **warmup_report(warmup_rows), "final_check": run.final_check,
        "lora": adapter_summary(sft_dir) if params.lora.enabled else None, "snapshots": snapshots}
    write_results(metrics_path, report_path, summary(report), report, timer)
    ckpt.clear()
    shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
