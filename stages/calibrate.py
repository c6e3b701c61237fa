"""Stage `calibrate`: measure the reward (coherent, or a reward model's) and write the normalisation PPO uses.

usage: python stages/calibrate.py BASE_DIR SFT_DIR CALIBRATION_JSONL PROMPTS_JSONL NORM_JSON METRICS_JSON REPORT_JSON
       PLOT_PNG
"""

import sys

from srppo.data.records import read_jsonl
from srppo.evaluation import plots
from srppo.io import write_json
from srppo.methods.ppo.roles import reward_model_or_none
from srppo.models.loading import context_length, frozen, load_tokenizer, setup_runtime
from srppo.rollout.sampling import (
    demo_generations,
    prompt_ids,
    rollout_engine,
    sampling_params,
)
from srppo.runtime.stage import Timer, load, log, progress, write_results
from srppo.scoring.calibrate import calibration_report, fit_normalizer, rewards_of


def _sample(engine, prompts, sampling, bar):
    gens = engine.generate(prompts, sampling, progress=bar)
    engine.close()
    return gens


def summary(report: dict) -> dict:
    """A handful of numbers for `dvc exp show`; the distributions and the normaliser stay in the report."""
    return {"reward_mean": {k: report[k]["mean"] for k in ("demonstrations", "sft_samples", "pt_samples")},
            **{k: report[k] for k in ("auc_demo_vs_pt", "auc_sft_vs_pt", "length_corr_sft_samples")}}


def main(base_dir, sft_dir, calib_path, prompts_path, norm_path, metrics_path, report_path, plot_path) -> None:
    params = load()
    cfg, rcfg = params.calibrate, params.rollouts
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("calibrate")
    tok = load_tokenizer(sft_dir)
    sft, pt = frozen(sft_dir, device, dtype), frozen(base_dir, device, dtype)  # p_PT also samples below
    rm = reward_model_or_none(params.reward, device, dtype)
    demos = read_jsonl(calib_path)
    prompts = read_jsonl(prompts_path)[: cfg.n_prompts]
    for recs, src in ((demos, calib_path), (prompts, prompts_path)):  # both get sampled: fail before that
        prompt_ids(tok, recs, src, rcfg.max_new_tokens, context_length(sft_dir))
    sampling = sampling_params(rcfg)
    sample = lambda model, path, recs, bar: _sample(rollout_engine(rcfg, model, tok, path, params.runtime.seed, dtype),
                                                    prompt_ids(tok, recs), sampling, bar)
    score = lambda gens: rewards_of(gens, sft, pt, tok.pad_token_id, device, rcfg.score_batch_size, rm)
    with timer.phase("score demonstrations"):
        demo_r, demo_len = score(demo_generations(tok, demos))
    with timer.phase("sample p_PT on the demonstration prompts"), progress(len(demos), "p_PT samples") as bar:
        pt_gens = sample(pt, base_dir, demos, bar)
        pt_r, pt_len = score(pt_gens)
    with timer.phase("sample p_SFT on PPO prompts"), progress(len(prompts), "p_SFT samples") as bar:
        sft_gens = sample(sft, sft_dir, prompts, bar)
        sft_r, sft_len = score(sft_gens)
    norm = fit_normalizer(sft_r, cfg.normalize, cfg.clip_quantile, cfg.clip_margin)
    report = calibration_report(demo_r, demo_len, sft_r, sft_len, pt_r, pt_len, norm)
    log("calibrate", f"reward mean: demos {demo_r.mean():.2f}, p_SFT samples {sft_r.mean():.2f}, "
        f"p_PT samples {pt_r.mean():.2f}; AUC demo>PT {report['auc_demo_vs_pt']:.2f}")
    write_json(norm_path, norm.to_dict())
    plots.reward_histogram({"demonstrations": demo_r.tolist(), "p_SFT samples": sft_r.tolist(),
                            "p_PT samples": pt_r.tolist()}, plot_path, f"{params.reward.source.capitalize()} reward before PPO")
    write_results(metrics_path, report_path, summary(report), report, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
