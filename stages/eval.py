"""Stage `eval`: the models (pretrained, SFT, SRPPO; baselines in the comparison grid) on the eval sets.

usage: python stages/eval.py EVAL_JSONL OUT_DIR METRICS_JSON REPORT_JSON NAME=MODEL_DIR [NAME=MODEL_DIR ...]
                             [--cache-dir CACHE_DIR]
`eval.models` picks which of the named models are evaluated, in its order. METRICS_JSON holds each model's
headline scores (and its lm-eval and judge scores when configured); REPORT_JSON adds EOS rate, counts and the
per-family breakdown.
CACHE_DIR keeps what is worth keeping between runs: nltk's Punkt model for IFEval-style checks
(CACHE_DIR/nltk_data, built once when it cannot be downloaded) and lm-eval's task files (CACHE_DIR/lm_eval).
dvc.yaml passes data/cache/eval and does not declare it as an output: what it holds never changes a result,
only how long the first run takes. Without --cache-dir these live in a temporary directory the run deletes.
"""

import sys
import tempfile
from pathlib import Path

from srppo.data.records import read_jsonl, write_jsonl
from srppo.evaluation import plots
from srppo.evaluation.judge import judge_outputs, load_instructions
from srppo.evaluation.lmeval import benchmark_table, ensure_punkt_tab, run_benchmarks
from srppo.evaluation.testbed_eval import (
    HEADLINE,
    generate_responses,
    markdown_table,
    score_items,
    summarise,
)
from srppo.io import write_text_atomic
from srppo.models.loading import context_length, frozen, load_tokenizer, setup_runtime
from srppo.rollout.sampling import prompt_ids, rollout_engine
from srppo.runtime.stage import Timer, load, log, progress, write_results

SUMMARY = ("strict_acc", "loose_acc", "in_domain_strict", "out_domain_strict", "arithmetic_em", "mean_tokens")


def judged_win_rate(cfg, engine, tok, items: list[dict], seed: int) -> dict:
    with progress(len(items), "answers for the judge") as bar:
        outputs = generate_responses(engine, tok, items, cfg.max_new_tokens, progress=bar)
    with progress(len(items), "judge") as bar:
        return judge_outputs(cfg, items, outputs, seed, progress=bar)


def cache_dir_option(args: list[str]) -> tuple[str | None, list[str]]:
    """`--cache-dir DIR` taken out of the arguments after REPORT_JSON: (DIR or None, the NAME=MODEL_DIR pairs)."""
    if "--cache-dir" not in args:
        return None, args
    i = args.index("--cache-dir")
    if i + 1 == len(args):
        raise SystemExit("eval: --cache-dir needs a directory")
    return args[i + 1], args[:i] + args[i + 2:]


def model_paths(pairs: list[str], wanted: list[str]) -> dict[str, str]:
    given = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if len(given) != len(pairs) or not set(wanted) <= set(given):
        raise SystemExit(f"eval: eval.models {wanted} need NAME=MODEL_DIR arguments for each; got {pairs}")
    return {name: given[name] for name in wanted}


def summary(result: dict) -> dict:
    """One model's numbers for `dvc exp show` (srppo/evaluation/compare.py reads the same keys from the grid's cells)."""
    out = {k: result[k] for k in SUMMARY}
    if "benchmarks" in result:
        out["benchmarks"] = result["benchmarks"]
    if "alpaca_eval" in result:
        out["alpaca_eval"] = {k: result["alpaca_eval"][k] for k in ("win_rate", "lc_win_rate")}
    return out


def main(eval_path, out_dir, metrics_path, report_path, *args) -> None:
    params = load()
    cache, pairs = cache_dir_option(list(args))
    paths = model_paths(pairs, params.eval.models)
    if cache is None:  # nothing declared to keep: the caches live and die with this run
        with tempfile.TemporaryDirectory(prefix="srppo-eval-cache-") as tmp:
            evaluate(params, eval_path, out_dir, metrics_path, report_path, paths, Path(tmp))
        return
    Path(cache).mkdir(parents=True, exist_ok=True)
    evaluate(params, eval_path, out_dir, metrics_path, report_path, paths, Path(cache))


def evaluate(params, eval_path, out_dir, metrics_path, report_path, paths: dict[str, str], cache: Path) -> None:
    cfg = params.eval
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("eval")
    items = read_jsonl(eval_path)
    ifeval_prompts = [c["prompt"] for it in items for c in it["checks"] if c.get("kind") == "ifeval" and "prompt" in c]
    if ifeval_prompts:  # IFEval's checkers count sentences with nltk's Punkt: make sure it is there, offline
        log("eval", f"punkt_tab: {ensure_punkt_tab((cache / 'nltk_data').resolve(), ifeval_prompts)}")
    first = paths[cfg.models[0]]  # all roles share the tokenizer and context
    prompt_ids(load_tokenizer(first), items, eval_path, cfg.max_new_tokens, context_length(first))
    out = Path(out_dir)
    results, rows_all = {}, []
    judged = load_instructions(cfg.judge.instructions, cfg.judge.reference_field, cfg.judge.limit) \
        if cfg.judge.endpoint and cfg.judge.instructions else []
    for name in cfg.models:
        with timer.phase(f"generate + check: {name}"), progress(len(items), f"eval {name}") as bar:
            tok = load_tokenizer(paths[name])
            model = frozen(paths[name], device, dtype)
            engine = rollout_engine(params.rollouts, model, tok, paths[name], params.runtime.seed, dtype,
                                    cfg.batch_size)
            rows = score_items(items, generate_responses(engine, tok, items, cfg.max_new_tokens, progress=bar))
            if judged:
                win = judged_win_rate(cfg.judge, engine, tok, judged, params.runtime.seed)
            engine.close()
            del model
        results[name] = summarise(rows)
        if judged:
            results[name]["alpaca_eval"] = win
            log("eval", f"{name}: win rate {win['win_rate']:.1f}, LC {win['lc_win_rate']:.1f} vs references")
        rows_all += [{"model": name, **r} for r in rows]
        log("eval", f"{name}: strict {results[name]['strict_acc']}, arithmetic {results[name]['arithmetic_em']}")
    with timer.phase("lm-eval benchmarks"):
        bench = run_benchmarks(cfg.benchmarks, {n: paths[n] for n in cfg.models}, cache / "lm_eval",
                               device.type, params.runtime.dtype, params.runtime.seed, lambda m: log("eval", m))
    for name, per_task in bench.items():
        results[name]["benchmarks"] = per_task
    if bench:
        write_text_atomic(out / "benchmarks.md", benchmark_table(bench))
    write_jsonl(out / "responses.jsonl", rows_all)
    table = markdown_table(results)
    write_text_atomic(out / "table.md", table)
    plots.grouped_bars(results, [k for k in HEADLINE if k[0] not in ("mean_tokens",)], out / "eval.png",
                       "Evaluation on the verifiable instruction testbed")
    print(table)
    write_results(metrics_path, report_path, {m: summary(r) for m, r in results.items()}, results, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
