"""Reward calibration: look at the coherent reward before trusting PPO with it.

Measures the reward on held-out demonstrations, on samples of p_SFT and on samples of p_PT, how
it correlates with length, and how often it ranks a demonstration above a pretrained sample for
the same prompt. Fits the normalisation PPO applies: shift/scale from p_SFT samples (the
distribution PPO starts from) and a clip range from their quantiles -- explicit, never a guess.
`calibrate_reward` is the `calibrate` stage's one library call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srppo.data.records import read_jsonl
from srppo.models.loading import context_length, frozen, load_tokenizer
from srppo.rollout.sampling import (
    demo_generations,
    prompt_ids,
    rollout_engine,
    sampling_params,
)
from srppo.runtime.stage import Timer, log, progress
from srppo.scoring.reward_model import reward_model_or_none
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import recorded_logprobs_are_the_models, score

SETS = ("demonstrations", "sft_samples", "pt_samples")  # what is scored, named as in the report


@dataclass
class Calibration:
    normalizer: RewardNormalizer    # what PPO applies to the raw reward
    report: dict                    # calibration_report: distributions, AUCs, length correlations, the normaliser
    rewards: dict[str, np.ndarray]  # SETS -> each response's raw reward, in input order


def calibrate_reward(params, base_dir: str | Path, sft_dir: str | Path, calibration_path: str | Path,
                     prompts_path: str | Path, device, dtype, *, timer: Timer | None = None) -> Calibration:
    """The reward (coherent, or the reward model's under `reward.source: model`) of the held-out
    demonstrations, of p_PT's samples for the same prompts and of p_SFT's samples for the first
    `calibrate.n_prompts` PPO prompts; the normaliser fitted on p_SFT's (params' `calibrate` section).

    Sampling uses params' `rollouts` settings and seed, each model through its own engine. `timer` gets the
    three phases (a fresh "calibrate" one if None).
    """
    cfg, rcfg = params.calibrate, params.rollouts
    timer = timer or Timer("calibrate")
    tok = load_tokenizer(sft_dir)
    sft, pt = frozen(sft_dir, device, dtype), frozen(base_dir, device, dtype)  # p_PT also samples below
    rm = reward_model_or_none(params.reward, device, dtype)
    demos = read_jsonl(calibration_path)
    prompts = read_jsonl(prompts_path)[: cfg.n_prompts]
    for recs, src in ((demos, calibration_path), (prompts, prompts_path)):  # both get sampled: fail before that
        prompt_ids(tok, recs, src, rcfg.max_new_tokens, context_length(sft_dir))
    sampling = sampling_params(rcfg)

    def sample(model, path, recs, bar):
        """The samples, and whether the log-probs the engine recorded are `model`'s own."""
        engine = rollout_engine(rcfg, model, tok, path, params.runtime.seed, dtype,
                                tokens=len(recs) * sampling.max_new_tokens)
        gens = engine.generate(prompt_ids(tok, recs), sampling, progress=bar)
        engine.close()
        return gens, recorded_logprobs_are_the_models(engine, sampling)

    scores = lambda gens, by_sft=False: rewards_of(gens, sft, pt, tok.pad_token_id, device, rcfg.score_batch_size,
                                                   rm, sampled_by_sft=by_sft)
    with timer.phase("score demonstrations"):
        demo_r, demo_len = scores(demo_generations(tok, demos))
    with timer.phase("sample p_PT on the demonstration prompts"), progress(len(demos), "p_PT samples") as bar:
        pt_r, pt_len = scores(sample(pt, base_dir, demos, bar)[0])
    with timer.phase("sample p_SFT on PPO prompts"), progress(len(prompts), "p_SFT samples") as bar:
        sft_r, sft_len = scores(*sample(sft, sft_dir, prompts, bar))
    norm = fit_normalizer(sft_r, cfg.normalize, cfg.clip_quantile, cfg.clip_margin)
    report = calibration_report(demo_r, demo_len, sft_r, sft_len, pt_r, pt_len, norm)
    log("calibrate", f"reward mean: demos {demo_r.mean():.2f}, p_SFT samples {sft_r.mean():.2f}, "
        f"p_PT samples {pt_r.mean():.2f}; AUC demo>PT {report['auc_demo_vs_pt']:.2f}")
    return Calibration(norm, report, dict(zip(SETS, (demo_r, sft_r, pt_r))))


def rewards_of(gens, sft, pt, pad_id, device, batch_size: int, reward_model=None,
               sampled_by_sft: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reward (coherent, or the reward model's) and response length of each generation, in batches.
    `sampled_by_sft`: p_SFT's own samples with its recorded log-probs (`score`)."""
    rewards, lengths = [], []
    for start in range(0, len(gens), batch_size):
        chunk = gens[start : start + batch_size]
        s = score(chunk, sft, pt, pad_id, device, reward_model=reward_model, sampled_by_sft=sampled_by_sft)
        rewards.extend(s.reward_raw.tolist())
        lengths.extend(len(g.response_ids) for g in chunk)
    return np.array(rewards), np.array(lengths)


def summary(x: np.ndarray) -> dict:
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max()),
            "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4])}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(reward of a positive > reward of a negative), ties count half (Mann-Whitney U / n1 n2)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def fit_normalizer(sft_rewards: np.ndarray, normalize: bool, clip_q: float, margin: float) -> RewardNormalizer:
    shift, scale = (float(sft_rewards.mean()), float(max(sft_rewards.std(), 1e-3))) if normalize else (0.0, 1.0)
    z = (sft_rewards - shift) / scale
    lo, hi = np.quantile(z, [clip_q, 1 - clip_q])
    return RewardNormalizer(shift, scale, float(lo - margin), float(hi + margin))


def calibration_report(demo_r, demo_len, sft_r, sft_len, pt_r, pt_len, normalizer) -> dict:
    return {
        "demonstrations": summary(demo_r),
        "sft_samples": summary(sft_r),
        "pt_samples": summary(pt_r),
        "length_corr_sft_samples": pearson(sft_r, sft_len.astype(float)),
        "length_corr_all": pearson(np.concatenate([demo_r, sft_r, pt_r]),
                                   np.concatenate([demo_len, sft_len, pt_len]).astype(float)),
        # Same prompts: does the reward prefer the expert's answer to the pretrained model's?
        "demo_beats_pt_same_prompt": float((demo_r > pt_r).mean()),
        "auc_demo_vs_pt": auc(demo_r, pt_r),
        "auc_sft_vs_pt": auc(sft_r, pt_r),
        "clipped_fraction_sft_samples": float(((sft_r - normalizer.shift) / normalizer.scale < normalizer.clip_low).mean()
                                              + ((sft_r - normalizer.shift) / normalizer.scale > normalizer.clip_high).mean()),
        "normalizer": normalizer.to_dict(),
    }

