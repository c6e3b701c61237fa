"""Stage `sft`: fine-tune p_PT on the demonstrations -> p_SFT.

usage: python stages/sft.py BASE_DIR DEMOS_JSONL OUT_DIR METRICS_JSON REPORT_JSON LIVE_DIR
Each optimizer step (loss, lr, grad_norm) goes to the DVCLive directory LIVE_DIR as it ends; the panels of
LIVE_DIR/curves.png are drawn at the end.
"""

import sys
from pathlib import Path

from live_curves import live_curves

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.io import atomic_dir
from srppo.methods.sft import check_max_len, encode_demos, micro_batches, train_sft
from srppo.models import lora
from srppo.models.loading import (
    context_length,
    load_causal_lm,
    load_tokenizer,
    save_pretrained,
    setup_runtime,
)
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


def main(base_dir: str, demos_path: str, out_dir: str, metrics_path: str, report_path: str, live_dir: str) -> None:
    params = load()
    cfg = params.sft
    distributed.relaunch_if_needed(params.runtime, __file__, sys.argv[1:])
    distributed.init(params.runtime)
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("sft")
    check_max_len(cfg.max_len, context_length(base_dir), base_dir)
    tok = load_tokenizer(base_dir)
    encoded = encode_demos(tok, read_jsonl(demos_path), cfg.max_len, demos_path, cfg.overlength,
                           lambda msg: log("sft", msg))
    model = load_causal_lm(base_dir, device, dtype, trainable=True)
    if params.lora.enabled:  # train an adapter; the base weights stay p_PT's
        model = lora.add_adapter(model, params.lora)
    ds_config = training_config(params.runtime, cfg.batch_size, cfg.grad_accum, cfg.max_grad_norm, dtype, cfg.lr)
    ckpt = stage_checkpointer(out_dir, params, ["runtime", "sft", "lora"], [base_dir, demos_path],
                              checkpoint_interval(params.runtime, cfg.checkpoint_every, "sft"),
                              lambda msg: log("sft", msg))
    n_micro = sum(1 for _ in micro_batches(len(encoded), cfg.batch_size, cfg.epochs, params.runtime.seed))
    with timer.phase(f"train {len(encoded)} demos x {cfg.epochs} epochs"), \
            progress(-(-n_micro // cfg.grad_accum), "sft", "step") as bar, \
            live_curves(live_dir, distributed.is_main()) as log_step:
        def on_step(row):
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            log_step(row["step"], row)
        history = train_sft(model, tok, encoded, cfg, params.runtime.seed, on_step, ckpt, ds_config)
    with timer.phase("save"), distributed.gathered(model), distributed.main_first() as main_rank:
        if main_rank:
            with atomic_dir(out_dir) as tmp:
                if params.lora.enabled:  # the adapter (for PPO) and the merged weights (for everyone else)
                    lora.save_sft(model, tok, tmp, save_pretrained)
                else:
                    save_pretrained(model, tok, tmp)
    if not distributed.is_main():
        return
    plots.curves(history, ["loss", "lr", "grad_norm"], Path(live_dir) / "curves.png", "SFT")
    summary = {"first_loss": history[0]["loss"], "final_loss": history[-1]["loss"], "steps": len(history)}
    tokens = history[-1]["tokens"]
    write_results(metrics_path, report_path, summary, {
        **summary, "tokens": tokens, "processes": distributed.world_size(),
        "tokens_per_s": round(tokens / timer.phases[next(iter(timer.phases))], 1)}, timer)
    ckpt.clear()


if __name__ == "__main__":
    main(*sys.argv[1:])
