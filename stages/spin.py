"""Stage `spin` (comparison grid): the SPIN baseline, iterated DPO from p_SFT on the demonstrations.

usage: python stages/spin.py SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each DPO step goes to the DVCLive directory LIVE_DIR as it ends (one step counter over all iterations);
the panels of LIVE_DIR/curves.png are drawn at the end.
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.spin import run_spin
from srppo.models.loading import save_pretrained, setup_runtime
from srppo.runtime.stage import Timer, load, write_results


def main(sft_dir, demos_path, out_dir, metrics_path, report_path, live_dir) -> None:
    params = load()
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("spin")
    with live_curves(live_dir) as log_step:
        run = run_spin(params, sft_dir, demos_path, device, dtype, timer=timer,
                       on_step=lambda row: log_step(row["step"], row))
    with timer.phase("save"), atomic_dir(out_dir) as tmp:
        save_pretrained(run.model, run.tokenizer, tmp)
    history = run.history
    plots.curves(history, ["spin_loss", "reward_margin", "reward_accuracy"], Path(live_dir) / "curves.png", "SPIN")
    summary = {"final_loss": history[-1]["spin_loss"], "final_margin": history[-1]["reward_margin"],
               "final_accuracy": history[-1]["reward_accuracy"]}
    write_results(metrics_path, report_path, summary,
                  {"iterations": params.spin.iterations, "pairs_per_iteration": run.pairs_per_iteration, **summary},
                  timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
