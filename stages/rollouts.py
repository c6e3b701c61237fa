"""Stage `rollouts`: sample p_SFT on PPO prompts, score them (coherent reward or reward model), save parquet buffers.

These buffers are the critic warm-up data and a browsable record of what p_SFT does before PPO.
usage: python stages/rollouts.py BASE_DIR SFT_DIR PROMPTS_JSONL OUT_DIR METRICS_JSON REPORT_JSON
"""

import random
import sys

from srppo.data.records import read_jsonl
from srppo.io import atomic_dir
from srppo.methods.ppo.roles import reward_model_or_none
from srppo.models.loading import context_length, frozen, load_tokenizer, setup_runtime
from srppo.rollout.sampling import prompt_ids, rollout_engine, sampling_params
from srppo.runtime.stage import Timer, load, log, progress, write_results
from srppo.scoring.buffer import buffer_path, to_frame
from srppo.scoring.score import score


def main(base_dir, sft_dir, prompts_path, out_dir, metrics_path, report_path) -> None:
    params = load()
    cfg = params.rollouts
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("rollouts")
    tok = load_tokenizer(sft_dir)
    rm = reward_model_or_none(params.reward, device, dtype)
    sft, pt = frozen(sft_dir, device, dtype), None if rm else frozen(base_dir, device, dtype)
    engine = rollout_engine(cfg, sft, tok, sft_dir, params.runtime.seed, dtype)
    records = read_jsonl(prompts_path)
    prompt_ids(tok, records, prompts_path, cfg.max_new_tokens, context_length(sft_dir))  # fail before sampling
    random.Random(params.runtime.seed).shuffle(records)
    need = cfg.n_buffers * cfg.buffer_size
    records = (records * (need // len(records) + 1))[:need]  # cycle a small prompt set
    summary = []
    with atomic_dir(out_dir) as tmp, progress(need, "rollouts") as bar:
        for b in range(cfg.n_buffers):
            items = records[b * cfg.buffer_size : (b + 1) * cfg.buffer_size]
            with timer.phase(f"buffer {b}"):
                gens = engine.generate(prompt_ids(tok, items), sampling_params(cfg), progress=bar)
                scored = score(gens, sft, pt, tok.pad_token_id, device, cfg.score_batch_size, rm)
                frame = to_frame(scored, gens, items, tok, b)
                frame.to_parquet(buffer_path(tmp, b), index=False)
            summary.append({"buffer": b, "reward_mean": float(frame.reward_raw.mean()),
                            "length_mean": float(frame.length.mean()),
                            "eos_rate": float(1 - frame.truncated.mean())})
            log("rollouts", f"buffer {b}: reward {summary[-1]['reward_mean']:.2f}, "
                f"length {summary[-1]['length_mean']:.1f}")
    engine.close()
    mean = lambda key: sum(b[key] for b in summary) / len(summary)  # buffers are of equal size
    write_results(metrics_path, report_path, {k: mean(k) for k in ("reward_mean", "length_mean", "eos_rate")},
                  {"buffers": summary, "engine": cfg.engine}, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
