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
from pathlib import Path

from srppo.data.records import write_jsonl
from srppo.evaluation import plots
from srppo.evaluation.lmeval import benchmark_table
from srppo.evaluation.run import evaluate_models
from srppo.evaluation.testbed_eval import HEADLINE, markdown_table
from srppo.io import read_json, write_text_atomic
from srppo.models.loading import setup_runtime
from srppo.runtime.stage import Timer, load, log, write_results

SUMMARY = ("strict_acc", "loose_acc", "in_domain_strict", "compositional_strict", "control_strict",
           "out_domain_strict", "arithmetic_em", "mean_tokens")


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


def unreached_snapshots(paths: dict[str, str]) -> dict[str, dict]:
    """{name: why} for the PPO snapshots among `paths` that hold no model: the run stopped before them (the PPO
    stage leaves their folder with only snapshot.json, `"reached": false`). They are left out, and said so."""
    out = {}
    for name, path in paths.items():
        meta = Path(path) / "snapshot.json"
        if "@" in name and meta.is_file() and not (Path(path) / "config.json").is_file():
            out[name] = read_json(meta)
    return out


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
    skipped = unreached_snapshots(paths)
    for name, why in skipped.items():
        log("eval", f"{name}: not evaluated, the PPO run stopped before it ({why.get('stopped_early')})")
    params.eval.models = [m for m in params.eval.models if m not in skipped]
    paths = {m: paths[m] for m in params.eval.models}
    device, dtype = setup_runtime(params.runtime)
    timer = Timer("eval")
    run = evaluate_models(params, eval_path, paths, device, dtype, cache_dir=cache, timer=timer)
    out = Path(out_dir)
    if run.benchmarks:
        write_text_atomic(out / "benchmarks.md", benchmark_table(run.benchmarks))
    write_jsonl(out / "responses.jsonl", run.responses)
    table = markdown_table(run.results)
    write_text_atomic(out / "table.md", table)
    plots.grouped_bars(run.results, [k for k in HEADLINE if k[0] not in ("mean_tokens",)], out / "eval.png",
                       "Evaluation on the verifiable instruction testbed")
    print(table)
    write_results(metrics_path, report_path, {m: summary(r) for m, r in run.results.items()},
                  {**run.results, **({"not_reached": skipped} if skipped else {})}, timer)


if __name__ == "__main__":
    main(*sys.argv[1:])
