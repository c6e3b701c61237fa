"""Stage `spin` (comparison grid): the SPIN baseline, iterated DPO from p_SFT on the demonstrations.

usage: python stages/spin.py SFT_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each DPO step goes to the DVCLive directory LIVE_DIR as it ends (one step counter over all iterations);
the panels of LIVE_DIR/curves.png are drawn at the end.
"""

import copy
import itertools
import sys
from pathlib import Path

from live_curves import live_curves

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.sft import encode_demos
from srppo.methods.spin import spin_pairs, train_spin_iteration
from srppo.models.loading import (
    frozen,
    load_causal_lm,
    load_tokenizer,
    save_pretrained,
    setup_runtime,
)
from srppo.rollout.engine import SamplingParams
from srppo.rollout.sampling import rollout_engine
from srppo.runtime.distributed import adamw
from srppo.runtime.stage import Timer, load, log, progress, write_results


def main(sft_dir, demos_path, out_dir, metrics_path, report_path, live_dir) -> None:
    params = load()
    cfg, seed = params.spin, params.runtime.seed
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("spin")
    tok = load_tokenizer(sft_dir)
    encoded = encode_demos(tok, read_jsonl(demos_path), params.sft.max_len, demos_path, params.sft.overlength,
                           lambda msg: log("spin", msg))
    model = load_causal_lm(sft_dir, device, dtype, trainable=True)
    opponent = frozen(sft_dir, device, dtype)  # iteration 0 plays against p_SFT itself
    engine = rollout_engine(params.rollouts, model, tok, sft_dir, seed, dtype)
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    history, steps = [], itertools.count(1)  # one step counter over all iterations, as in `history`
    with live_curves(live_dir) as log_step:
        for it in range(cfg.iterations):
            with timer.phase(f"iteration {it}: sample {len(encoded)} rejected answers"), \
                    progress(len(encoded), f"spin {it} samples") as bar:
                if it:
                    engine.sync_weights(model)  # the current iterate writes the rejected answers
                pairs = spin_pairs(engine, encoded, sampling, progress=bar)
            with timer.phase(f"iteration {it}: DPO"), progress(-(-len(pairs) // cfg.batch_size) * cfg.epochs,
                                                                f"spin {it}", "step") as bar:
                def on_step(row):
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['spin_loss']:.3f}", acc=f"{row['reward_accuracy']:.2f}")
                    log_step(next(steps), {"iteration": it, **row})
                optimizer = adamw(model.parameters(), cfg.lr, 0.0)
                rows = train_spin_iteration(model, opponent, tok, pairs, cfg, optimizer, seed + it, on_step)
            history += [{"step": len(history) + i + 1, "iteration": it, **r} for i, r in enumerate(rows)]
            log("spin", f"iteration {it}: loss {rows[-1]['spin_loss']:.3f}, margin {rows[-1]['reward_margin']:.3f}")
            opponent = copy.deepcopy(model).eval().requires_grad_(False)  # the next opponent: this iterate
    engine.close()
    with timer.phase("save"), atomic_dir(out_dir) as tmp:
        save_pretrained(model, tok, tmp)
    plots.curves(history, ["spin_loss", "reward_margin", "reward_accuracy"], Path(live_dir) / "curves.png", "SPIN")
    summary = {"final_loss": history[-1]["spin_loss"], "final_margin": history[-1]["reward_margin"],
               "final_accuracy": history[-1]["reward_accuracy"]}
    write_results(metrics_path, report_path, summary,
                  {"iterations": cfg.iterations, "pairs_per_iteration": len(encoded), **summary}, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
