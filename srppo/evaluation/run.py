"""The named models on the eval sets: `evaluate_models` is the `eval` stage's one library call.

Each model in `eval.models` order answers every eval item greedily and the testbed's exact checkers score
the answers (testbed_eval.py); with `eval.judge` it also answers the judge's instructions (judge.py); then
lm-evaluation-harness runs `eval.benchmarks` on all of them (lmeval.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from srppo.data.records import read_jsonl
from srppo.evaluation.judge import judge_outputs, load_instructions
from srppo.evaluation.lmeval import ensure_punkt_tab, run_benchmarks
from srppo.evaluation.testbed_eval import generate_responses, paired_over_prompts, score_items, summarise
from srppo.models.loading import context_length, frozen, load_tokenizer
from srppo.rollout.sampling import prompt_ids, rollout_engine
from srppo.runtime.precision import autocast_dtype, full_precision
from srppo.runtime.stage import Timer, log, progress


@dataclass
class EvalResult:
    results: dict[str, dict]     # model -> summarise(): headline scores, per-family breakdown (+ "alpaca_eval",
                                 # "benchmarks" when configured)
    responses: list[dict]        # one row per (model, item): the answer and the checkers' verdicts
    benchmarks: dict[str, dict]  # model -> lm-eval task -> metric -> value ({} when eval.benchmarks is unset)


def evaluate_models(params, eval_path: str | Path, paths: dict[str, str], device, dtype, *,
                    cache_dir: str | Path | None = None, timer: Timer | None = None) -> EvalResult:
    """The models `eval.models` names, in that order, on the eval items of `eval_path`, with params' `eval`
    section, sampling through `rollouts.engine`; `paths` maps each name to its model directory.

    `cache_dir` keeps nltk's Punkt model (`nltk_data/`) and lm-eval's task files (`lm_eval/`) between runs
    and is created if missing; None: a temporary directory deleted when the call returns. `timer` gets
    one phase per model and one for lm-eval (a fresh "eval" one if None).
    """
    cfg = params.eval
    timer = timer or Timer("eval")
    measuring = nullcontext() if cfg.autocast else full_precision()  # answers are a measurement
    with _cache(cache_dir) as cache, measuring:
        items = _eval_items(eval_path, paths[cfg.models[0]], cfg.max_new_tokens, cache)
        judged = load_instructions(cfg.judge.instructions, cfg.judge.reference_field, cfg.judge.limit) \
            if cfg.judge.endpoint and cfg.judge.instructions else []
        results, responses = {}, []
        for name in cfg.models:
            with timer.phase(f"generate + check: {name}"):
                rows, win = _answer(params, name, paths[name], items, judged, device, dtype)
            results[name] = summarise(rows)
            results[name]["answered_in"] = str(autocast_dtype() or dtype).removeprefix("torch.")  # eval.autocast
            if judged:
                results[name]["alpaca_eval"] = win
                log("eval", f"{name}: win rate {win['win_rate']:.1f}, LC {win['lc_win_rate']:.1f} vs references")
            responses += [{"model": name, **r} for r in rows]
            log("eval", f"{name}: strict {results[name]['strict_acc']}, arithmetic {results[name]['arithmetic_em']}")
        with timer.phase("lm-eval benchmarks"):
            bench = run_benchmarks(cfg.benchmarks, {n: paths[n] for n in cfg.models}, cache / "lm_eval",
                                   device.type, params.runtime.dtype, params.runtime.seed, lambda m: log("eval", m))
    for name, per_task in bench.items():
        results[name]["benchmarks"] = per_task
    if "sft" in results:  # every other model against p_SFT, item by item
        by_model = {name: [r for r in responses if r["model"] == name] for name in results}
        for name in results:
            if name != "sft":
                results[name]["vs_sft"] = paired_over_prompts(by_model["sft"], by_model[name], seed=params.runtime.seed)
    return EvalResult(results, responses, bench)


def _eval_items(eval_path: str | Path, first: str, max_new_tokens: int, cache: Path) -> list[dict]:
    """The eval items, checked against the context before any model loads (all models share the tokenizer
    and context); nltk's Punkt model in place when IFEval-style checks need it."""
    items = read_jsonl(eval_path)
    ifeval_prompts = [c["prompt"] for it in items for c in it["checks"] if c.get("kind") == "ifeval" and "prompt" in c]
    if ifeval_prompts:  # IFEval's checkers count sentences with nltk's Punkt: make sure it is there, offline
        log("eval", f"punkt_tab: {ensure_punkt_tab((cache / 'nltk_data').resolve(), ifeval_prompts)}")
    prompt_ids(load_tokenizer(first), items, eval_path, max_new_tokens, context_length(first))
    return items


def _answer(params, name: str, path: str, items: list[dict], judged: list[dict], device,
            dtype) -> tuple[list[dict], dict | None]:
    """One model's scored answers to the eval items, and its judged win rate when there are `judged` instructions."""
    cfg = params.eval
    win = None
    with progress(len(items), f"eval {name}") as bar:
        tok = load_tokenizer(path)
        model = frozen(path, device, dtype)
        tokens = len(items) * cfg.max_new_tokens + (len(judged) * cfg.judge.max_new_tokens if judged else 0)
        engine = rollout_engine(params.rollouts, model, tok, path, params.runtime.seed, dtype, cfg.batch_size,
                                tokens=tokens)
        rows = score_items(items, generate_responses(engine, tok, items, cfg.max_new_tokens, progress=bar))
        if judged:
            win = _judged_win_rate(cfg.judge, engine, tok, judged, params.runtime.seed)
        engine.close()
    return rows, win


def _judged_win_rate(cfg, engine, tok, items: list[dict], seed: int) -> dict:
    with progress(len(items), "answers for the judge") as bar:
        outputs = generate_responses(engine, tok, items, cfg.max_new_tokens, progress=bar)
    with progress(len(items), "judge") as bar:
        return judge_outputs(cfg, items, outputs, seed, progress=bar)


@contextmanager
def _cache(cache_dir: str | Path | None) -> Iterator[Path]:
    if cache_dir is None:  # nothing declared to keep: the caches live and die with this call
        with tempfile.TemporaryDirectory(prefix="srppo-eval-cache-") as tmp:
            yield Path(tmp)
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    yield Path(cache_dir)
