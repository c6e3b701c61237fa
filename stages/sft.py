"""Stage `sft`: fine-tune p_PT on the demonstrations -> p_SFT.

usage: python stages/sft.py BASE_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each optimizer step (loss, lr, grad_norm) goes to the DVCLive directory LIVE_DIR as it ends; the panels of
LIVE_DIR/curves.png are drawn at the end. Resumable checkpoints go to OUT_DIR/../checkpoints/<name>, derived
from OUT_DIR, next to it and not part of it (deleted when the stage succeeds).
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.sft import run_sft
from srppo.models.loading import setup_runtime
from srppo.runtime import distributed
from srppo.runtime.checkpoint import stage_checkpointer
from srppo.runtime.stage import Timer, load, log, write_results


def main(base_dir: str, demos_path: str, out_dir: str, metrics_path: str, report_path: str, live_dir: str) -> None:
    params = load()
    distributed.relaunch_if_needed(params.runtime, __file__, sys.argv[1:])
    distributed.init(params.runtime)
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("sft")
    ckpt = stage_checkpointer(out_dir, params, ["runtime", "sft", "lora"], [base_dir, demos_path],
                              params.sft.checkpoint_every,
                              lambda msg: log("sft", msg), params.sft.checkpoint_min_seconds)
    with live_curves(live_dir, distributed.is_main()) as log_step:
        run = run_sft(params, base_dir, demos_path, device, dtype, ckpt=ckpt, timer=timer,
                      on_step=lambda row: log_step(row["step"], row))
    with timer.phase("save"), distributed.gathered(run.model), distributed.main_first() as main_rank:
        if main_rank:
            with atomic_dir(out_dir) as tmp:
                run.save(tmp)
    if not distributed.is_main():
        return
    history = run.history
    plots.curves(history, ["loss", "lr", "grad_norm"], Path(live_dir) / "curves.png", "SFT")
    summary = {"first_loss": history[0]["loss"], "final_loss": history[-1]["loss"], "steps": len(history)}
    tokens = history[-1]["tokens"]
    write_results(metrics_path, report_path, summary, {
        **summary, "tokens": tokens, "processes": distributed.world_size(),
        "tokens_per_s": round(tokens / run.train_seconds, 1)}, timer)
    ckpt.clear()


if __name__ == "__main__":
    main(*sys.argv[1:])
