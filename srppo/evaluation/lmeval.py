"""Paper benchmarks through lm-evaluation-harness, offline: GSM8K (5-shot EM), IFEval and GPQA from local files.

lm-eval's built-in `gsm8k` and `ifeval` tasks load `openai/gsm8k` / `google/IFEval` from the hub. Here
the same task definitions are written as YAMLs with `dataset_path: json` and local `data_files`, so
they run with no network; the built-in tasks remain usable by name where the hub is reachable.

IFEval's checkers count words and sentences with nltk's Punkt model (`punkt_tab`), which lm-eval
fetches with `nltk.download` on first use. Without a hub, `ensure_punkt_tab` builds the model with
nltk's own trainer (on the benchmark's text plus a list of common English abbreviations) and saves
it with nltk's `save_punkt_params` into a project-local NLTK data directory. An installed
`punkt_tab` always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from srppo.data.records import DataError, scan_jsonl

GSM8K = "srppo_gsm8k"
IFEVAL = "srppo_ifeval"
GPQA, GPQA_COT = "srppo_gpqa", "srppo_gpqa_cot"
GPQA_FIELDS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
GPQA_PROMPT = ("What is the correct answer to this question:{{Question}}\nChoices:\n(A) {{choice1}}\n(B) {{choice2}}\n"
               "(C) {{choice3}}\n(D) {{choice4}}\n")
# Common English abbreviations that end with a period but not a sentence (Punkt's abbrev_types, lower-case).
ABBREVIATIONS = ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "u.s", "u.k",
                 "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
                 "oct", "nov", "dec", "no", "vol", "fig", "approx", "dept", "est", "gen", "gov", "mt", "p.m",
                 "a.m", "ph.d", "cf", "al"]


def _gsm8k_yaml(test: Path, train: Path | None, max_gen_toks: int) -> dict:
    # the built-in gsm8k task (lm-eval 0.4), with local files in place of openai/gsm8k
    files = {"test": str(test), "train": str(train or test)}
    return {
        "task": GSM8K, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
        "output_type": "generate_until", "training_split": "train", "fewshot_split": "train",
        "test_split": "test", "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": max_gen_toks},
        "num_fewshot": 5,
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                {"function": "take_first"}]}],
        "metadata": {"version": 3.0},
    }


def _ifeval_yaml(data: Path, max_gen_toks: int) -> str:
    # YAML text: lm-eval resolves `!function utils.X` against the task directory (utils.py below)
    body = yaml.safe_dump({
        "task": IFEVAL, "dataset_path": "json", "dataset_kwargs": {"data_files": {"train": str(data)}},
        "output_type": "generate_until", "test_split": "train", "num_fewshot": 0, "doc_to_text": "prompt",
        "doc_to_target": 0,
        "generation_kwargs": {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": max_gen_toks},
        "metadata": {"version": 4.0}}, sort_keys=False)
    metrics = "".join(
        f"  - metric: {m}\n    aggregation: {agg}\n    higher_is_better: true\n"
        for m, agg in (("prompt_level_strict_acc", "mean"), ("inst_level_strict_acc", "!function utils.agg_inst_level_acc"),
                       ("prompt_level_loose_acc", "mean"), ("inst_level_loose_acc", "!function utils.agg_inst_level_acc")))
    return body + "process_results: !function utils.process_results\nmetric_list:\n" + metrics


def _gpqa_yaml(data: Path, cot: bool, max_gen_toks: int) -> str:
    """The built-in gpqa_main_zeroshot (log-likelihood of (A)-(D)) or gpqa_main_cot_zeroshot (generate,
    then extract the letter), over a local JSONL/CSV copy with GPQA's columns; choices are shuffled
    by lm-eval's own process_docs under the run's seed."""
    kind = "csv" if data.suffix == ".csv" else "json"
    task = {"task": GPQA_COT if cot else GPQA, "dataset_path": kind,
            "dataset_kwargs": {"data_files": {"train": str(data)}}, "training_split": "train",
            "validation_split": "train", "test_split": None, "num_fewshot": 0, "doc_to_target": "answer",
            "metadata": {"version": 2.2}}
    if cot:
        task |= {"output_type": "generate_until", "doc_to_text": GPQA_PROMPT + "Let's think step by step: ",
                 "generation_kwargs": {"until": ["</s>"], "do_sample": False, "temperature": 0.0,
                                       "max_gen_toks": max_gen_toks},
                 "filter_list": [
                     {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "(?<=The answer is )(.*)(?=.)"},
                                                         {"function": "take_first"}]},
                     {"name": "flexible-extract", "filter": [
                         {"function": "multi_choice_regex", "group_select": -1, "ignore_case": True,
                          "ignore_punctuation": True, "regex_pattern": "(\\([A-Z]\\))"}, {"function": "take_first"}]}],
                 "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                  "ignore_case": True, "ignore_punctuation": True}]}
    else:
        task |= {"output_type": "multiple_choice", "doc_to_text": GPQA_PROMPT + "Answer:",
                 "doc_to_choice": ["(A)", "(B)", "(C)", "(D)"],
                 "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]}
    body = yaml.safe_dump(task, sort_keys=False)
    return body + f"process_docs: !function utils.{'gpqa_cot_docs' if cot else 'gpqa_docs'}\n"


def check_jsonl(path: Path, fields: list[str]) -> None:
    """Fail before loading a model: lm-eval's own errors on a bad row are far from the file."""
    for row, rec in scan_jsonl(path):
        for field in fields:
            if field not in rec:
                raise DataError(path, row, field, "is missing")


def check_gpqa(path: Path) -> None:
    if path.suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        missing = [c for c in GPQA_FIELDS if c not in header]
        if missing:
            raise DataError(path, 1, missing[0], "is missing from the CSV header (GPQA's columns)")
    else:
        check_jsonl(path, GPQA_FIELDS)


def write_tasks(out: Path, gsm8k_test: Path | None = None, gsm8k_train: Path | None = None,
                ifeval: Path | None = None, ifeval_max_tokens: int = 1280, gsm8k_max_tokens: int = 256,
                gpqa: Path | None = None, gpqa_modes: tuple[str, ...] = ("direct", "cot"),
                gpqa_max_tokens: int = 1024) -> list[str]:
    """Task YAMLs for the given local files; returns the task names to run."""
    out.mkdir(parents=True, exist_ok=True)
    names, utils = [], []
    if gsm8k_test:
        for p in (gsm8k_test, gsm8k_train):
            if p:
                check_jsonl(Path(p), ["question", "answer"])
        (out / f"{GSM8K}.yaml").write_text(yaml.safe_dump(_gsm8k_yaml(Path(gsm8k_test).resolve(),
                                           Path(gsm8k_train).resolve() if gsm8k_train else None,
                                           gsm8k_max_tokens), sort_keys=False))
        names.append(GSM8K)
    if ifeval:
        check_jsonl(Path(ifeval), ["key", "prompt", "instruction_id_list", "kwargs"])
        (out / f"{IFEVAL}.yaml").write_text(_ifeval_yaml(Path(ifeval).resolve(), ifeval_max_tokens))
        utils.append("from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa")
        names.append(IFEVAL)
    if gpqa:
        check_gpqa(Path(gpqa))
        for mode in gpqa_modes:
            cot = mode == "cot"
            (out / f"{GPQA_COT if cot else GPQA}.yaml").write_text(_gpqa_yaml(Path(gpqa).resolve(), cot, gpqa_max_tokens))
            names.append(GPQA_COT if cot else GPQA)
        utils += ["from lm_eval.tasks.gpqa.zeroshot.utils import process_docs as gpqa_docs  # noqa",
                  "from lm_eval.tasks.gpqa.cot_zeroshot.utils import process_docs as gpqa_cot_docs  # noqa"]
    (out / "utils.py").write_text("\n".join(utils) + "\n")
    return names


def ensure_punkt_tab(data_dir: Path, texts: list[str]) -> str:
    """Make `punkt_tab/english` findable by nltk; returns where it came from."""
    import nltk
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    nltk.data.path.insert(0, str(data_dir))
    os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [str(data_dir), os.environ.get("NLTK_DATA")]))
    try:
        return str(nltk.data.find("tokenizers/punkt_tab/english/"))
    except LookupError:
        pass
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train("\n".join(texts), finalize=True)
    params = trainer.get_params()
    params.abbrev_types |= set(ABBREVIATIONS)
    target = data_dir / "tokenizers" / "punkt_tab" / "english"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # nltk's writer insists on private directories
    os.chmod(data_dir / "tokenizers", 0o700)
    os.chmod(target.parent, 0o700)
    save_punkt_params(params, str(target))
    return f"built {target} (nltk PunktTrainer on {len(texts)} texts + {len(ABBREVIATIONS)} abbreviations)"


def run(model_dir: str, tasks_dir: Path, tasks: list[str], limit: int | None = None, batch_size: int = 8,
        device: str = "cpu", dtype: str = "float32", chat_template: bool = True, seed: int = 0) -> dict:
    """lm-eval's `simple_evaluate` on a local HF model directory; returns {task: {metric: value}}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": dtype, "trust_remote_code": False},
        tasks=tasks, task_manager=TaskManager(include_path=str(tasks_dir)), limit=limit, batch_size=batch_size,
        device=device, apply_chat_template=chat_template, log_samples=False, random_seed=seed,
        numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=0)
    return {task: _metrics(values) for task, values in out["results"].items()}


def _metrics(values: dict) -> dict:
    """lm-eval keys are 'metric,filter': keep 'metric' (filter none) or 'metric/filter'; drop stderr."""
    kept = {}
    for key, value in values.items():
        metric, _, filt = key.partition(",")
        if filt and "stderr" not in metric and isinstance(value, (int, float)):
            kept[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
    return kept


def run_benchmarks(cfg, model_dirs: dict[str, str], work: Path, device: str, dtype: str, seed: int,
                   log=print) -> dict[str, dict]:
    """`cfg` is params.eval.benchmarks; returns {model: {task: {metric: value}}} ({} when none is set)."""
    if not (cfg.gsm8k_test or cfg.ifeval or cfg.gpqa):
        return {}
    tasks = write_tasks(work / "tasks", cfg.gsm8k_test and Path(cfg.gsm8k_test),
                        cfg.gsm8k_train and Path(cfg.gsm8k_train), cfg.ifeval and Path(cfg.ifeval),
                        cfg.ifeval_max_tokens, cfg.gsm8k_max_tokens, cfg.gpqa and Path(cfg.gpqa),
                        tuple(cfg.gpqa_modes), cfg.gpqa_max_tokens)
    if cfg.ifeval:
        import json

        texts = [json.loads(line)["prompt"] for line in open(cfg.ifeval, encoding="utf-8") if line.strip()]
        log(f"punkt_tab: {ensure_punkt_tab(work / 'nltk_data', texts)}")
    results = {}
    for name, model_dir in model_dirs.items():
        log(f"lm-eval {', '.join(tasks)} on {name} (limit {cfg.limit})")
        results[name] = run(model_dir, work / "tasks", tasks, cfg.limit, cfg.batch_size, device, dtype, seed=seed)
    return results


def benchmark_table(results: dict[str, dict]) -> str:
    """Models x (task, metric), paper-style: higher is better everywhere."""
    columns = sorted({(task, metric) for per_model in results.values() for task, ms in per_model.items() for metric in ms})
    lines = ["| Model | " + " | ".join(f"{t.removeprefix('srppo_')} {m}" for t, m in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for model, per_model in results.items():
        cells = [per_model.get(t, {}).get(m) for t, m in columns]
        lines.append(f"| {model} | " + " | ".join("–" if v is None else f"{100 * v:.2f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"
