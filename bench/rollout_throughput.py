"""Rollout throughput: the vLLM engine vs the transformers engine vs one-prompt-at-a-time generate.

    python bench/rollout_throughput.py                          # p_SFT of the embedded default, CPU, fp32
    python bench/rollout_throughput.py --model DIR --prompts 256 --repeats 5

Same model, same prompts (the testbed's PPO prompts, chat-encoded), same sampling (temperature 1, top-p 1)
for the three engines: `hf` batched (`--batch-size` prompts per generate), `hf` with batch 1 (naive) and
`vllm` (in-process engine, its own copy of the weights). Throughput = generated tokens (`response_ids`,
EOS included) / seconds of `engine.generate`; engine startup is timed apart. After one warm-up call
each, the engines take turns for `--repeats` rounds, so a machine shared with other jobs slows all three
alike; the table gives medians and the ratios of medians. On a GPU (cuda visible) everything runs there
and vLLM takes `gpu_memory_utilization` from `VLLMOptions`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from srppo.config.params import PrepareConfig, VLLMOptions
from srppo.data.batch import encode_prompt
from srppo.data.records import read_jsonl
from srppo.models.loading import load_causal_lm, load_tokenizer
from srppo.rollout.engine import SamplingParams, make_engine

PROMPTS_FILE = Path("data/prepared/ppo_prompts.jsonl")


def default_model() -> Path:
    for path in (Path("data/sft"), Path("data/base")):
        if (path / "config.json").exists():
            return path
    raise SystemExit("no model at data/sft or data/base: materialise the embedded default first with "
                     "`dvc repro sft` (or pass --model DIR)")


def prompt_records() -> tuple[list[dict], str]:
    if PROMPTS_FILE.exists():
        return read_jsonl(PROMPTS_FILE), str(PROMPTS_FILE)
    from srppo.data.prepare import testbed_splits, with_system_prompt

    cfg = PrepareConfig()  # the same records `dvc repro prepare` would write
    return [with_system_prompt(r, cfg.system_prompt) for r in testbed_splits(cfg)["ppo_prompts"]], "srppo.testbed"


def timed_generate(engine, prompts: list[list[int]], params: SamplingParams) -> dict:
    t = time.perf_counter()
    gens = engine.generate(prompts, params)
    seconds = time.perf_counter() - t
    tokens = sum(len(g.response_ids) for g in gens)
    return {"seconds": seconds, "tokens": tokens, "tps": tokens / seconds,
            "truncated": sum(g.truncated for g in gens) / len(gens)}


def machine(device: torch.device) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    import transformers
    import vllm

    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none"
    return [f"CPU: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
            f"{torch.get_num_threads()} torch threads; GPU: {gpu}",
            f"torch {torch.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}, "
            f"Python {platform.python_version()}"]


def report(args, runs: dict, startup: dict, meta: dict) -> str:
    med = {name: statistics.median(r["tps"] for r in rs) for name, rs in runs.items()}
    lines = ["| engine | tokens/s (median) | tokens/s (min–max) | s per call (median) | tokens per call "
             "(median) | truncated | startup s |", "|---|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        tps = [r["tps"] for r in rs]
        lines.append(f"| {name} | {med[name]:.1f} | {min(tps):.1f}–{max(tps):.1f} "
                     f"| {statistics.median(r['seconds'] for r in rs):.2f} "
                     f"| {statistics.median(r['tokens'] for r in rs):.0f} "
                     f"| {statistics.mean(r['truncated'] for r in rs):.0%} | {startup[name]:.1f} |")
    lines += ["", "| ratio | of the medians | per round: median (min–max) |", "|---|---|---|"]
    hf, naive = f"hf (batch {args.batch_size})", "hf naive (batch 1)"
    for label, a, b in (("vLLM / HF batched", "vllm", hf), ("HF batched / naive", hf, naive),
                        ("vLLM / naive", "vllm", naive)):
        per_round = [x["tps"] / y["tps"] for x, y in zip(runs[a], runs[b])]  # same round: same machine load
        lines.append(f"| {label} | {med[a] / med[b]:.2f}x | {statistics.median(per_round):.2f}x "
                     f"({min(per_round):.2f}–{max(per_round):.2f}) |")
    head = [
        "# Rollout throughput: vLLM vs transformers generate", "",
        f"Model `{meta['model']}` ({meta['params'] / 1e6:.0f}M parameters, {args.dtype}, {meta['device']}); "
        f"{args.prompts} prompts from {meta['source']} (chat-encoded, {meta['prompt_len']:.0f} tokens on "
        f"average); max_new_tokens {args.max_new_tokens}, temperature 1.0, top-p 1.0; batch size "
        f"{args.batch_size} for the HF and vLLM engines. Tokens/s = generated response tokens (EOS "
        f"included) / wall seconds of `engine.generate`, median of {args.repeats} rounds after one warm-up "
        f"call per engine (the engines take turns each round); startup (model load, vLLM engine and KV "
        f"cache) is timed apart and excluded. Load average {meta['load'][0]:.2f} before, "
        f"{meta['load'][1]:.2f} after (a machine shared with other jobs).", "",
        *[f"- {m}" for m in meta["machine"]], f"- command: `{meta['command']}`", ""]
    return "\n".join(head + lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="HF model directory (default: data/sft, else data/base)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--out", type=Path, default=Path("docs/results/rollout-throughput.md"))
    args = ap.parse_args()

    model_dir = args.model or default_model()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    load0 = os.getloadavg()[0]
    tok = load_tokenizer(model_dir)
    records, source = prompt_records()
    records = (records * (args.prompts // len(records) + 1))[: args.prompts]
    prompts = [encode_prompt(tok, r["messages"]) for r in records]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0)

    threads = torch.get_num_threads()
    engines, startup = {}, {}
    t = time.perf_counter()
    model = load_causal_lm(model_dir, device, dtype)
    startup[f"hf (batch {args.batch_size})"] = startup["hf naive (batch 1)"] = time.perf_counter() - t
    engines[f"hf (batch {args.batch_size})"] = make_engine("hf", model, tok, args.batch_size)
    engines["hf naive (batch 1)"] = make_engine("hf", model, tok, 1)
    t = time.perf_counter()
    engines["vllm"] = make_engine("vllm", model, tok, args.batch_size, model_path=str(model_dir),
                                  options=VLLMOptions(), seed=0, dtype=dtype)
    startup["vllm"] = time.perf_counter() - t
    if torch.get_num_threads() != threads:  # keep the transformers engines on the threads they started with
        print(f"vLLM changed torch threads {threads} -> {torch.get_num_threads()}; restoring", file=sys.stderr)
        torch.set_num_threads(threads)

    for name, engine in engines.items():  # warm-up: allocator, kernels, vLLM's first scheduling
        timed_generate(engine, prompts[: args.batch_size], params)
    runs = {name: [] for name in engines}
    for r in range(args.repeats):
        for name, engine in engines.items():
            torch.manual_seed(r)  # the HF engines sample from torch's RNG; vLLM seeds each request itself
            runs[name].append(timed_generate(engine, prompts, params))
            print(f"round {r + 1}/{args.repeats} {name}: {runs[name][-1]['tps']:.1f} tokens/s", file=sys.stderr)
    engines["vllm"].close()

    meta = dict(model=str(model_dir), params=sum(p.numel() for p in model.parameters()), device=device.type,
                source=source, prompt_len=statistics.mean(len(p) for p in prompts),
                load=(load0, os.getloadavg()[0]), machine=machine(device),
                command=shlex.join(["python", *sys.argv]))
    text = report(args, runs, startup, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
