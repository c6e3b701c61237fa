"""Performance of the embedded default against its performance targets, in one run.

    python bench/run.py            # ~15 minutes on 2 cores -> docs/results/benchmarks.{md,json}
    python bench/run.py --quick    # tiny workloads, a smoke check -> /tmp/srppo-bench-quick.{md,json}

Each workload runs in its own process under GNU `/usr/bin/time -v` (bench/workloads.py, bench/trl_grpo.py),
so the peak RSS belongs to that workload alone. Needs data/base, data/sft, data/prepared and
data/calibrate from `dvc repro` (or `dvc pull`), and `pip install -e ".[bench]"` for TRL.
FLOPs: training = 6 x params x tokens (forward + backward), forward only = 2 x params x tokens, with
tokens = non-padding tokens (prompt + response) and params = all parameters (tied head counted once):
the usual estimate, not a count of what the kernels do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_times import SOURCES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GB = 1e9
TARGETS = {"repro_s": 6 * 60, "mfu": 0.25, "rollout": 8.0, "vs_trl": 3.0, "ppo_speedup": 2.5, "sft_speedup": 2.5,
           "rss_full": 6 * GB, "rss_lora": 3 * GB, "noop_s": 10.0}


def child(args: list[str], out: Path) -> dict:
    """Run one workload in a fresh process; its JSON plus its peak RSS (bytes) from /usr/bin/time -v."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    cmd = [*timer, PY, *args, str(out)]
    print(f"$ {shlex.join(cmd[len(timer):])}", file=sys.stderr, flush=True)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{shlex.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    result = json.loads(out.read_text())
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    result["peak_rss_bytes"] = int(rss.group(1)) * 1024 if rss else None
    result["command"] = shlex.join(["python", *args, out.name])
    return result


def dvc_noop(quick: bool) -> dict:
    """`dvc repro` twice on a fresh copy of the committed pipeline (git HEAD) under the smoke preset:
    the first run builds everything, the next ones have nothing to do. The working checkout is not
    touched (its pipeline may be mid-change); smoke uses the default's own 135M model, so DVC hashes
    and checks the same model directories a default no-op would."""
    if quick:
        return {"skipped": "--quick"}
    with tempfile.TemporaryDirectory(prefix="srppo-bench-dvc-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1",
               "PATH": os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "")])}
        sh = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True)
        archive = subprocess.run(["git", "archive", "HEAD", "srppo", "stages", "configs", "dvc.yaml", "params.yaml"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x"], cwd=repo, input=archive, check=True)
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], [PY, "-m", "srppo.config.presets", "configs/smoke.yaml"]):
            sh(*cmd)
        t = time.perf_counter()
        try:
            sh("dvc", "repro")
        except subprocess.CalledProcessError as err:  # report it in the table instead of losing the run
            return {"error": f"`dvc repro` on the copy failed: {(err.stderr or '')[-500:]}"}
        full = time.perf_counter() - t
        noops = []
        for _ in range(3):
            t = time.perf_counter()
            out = sh("dvc", "repro").stdout
            noops.append(time.perf_counter() - t)
        status = sh("dvc", "status").stdout.strip()
    return {"smoke_full_s": full, "noop_s": sorted(noops)[1], "noop_runs_s": noops, "status_after": status,
            "last_output": out.strip().splitlines()[-1] if out.strip() else ""}


def stage_times() -> dict:
    """Each stage's own seconds from the last full `dvc repro` here (reports/*.json, bench/stage_times.py)."""
    times = {}
    for stage, path in SOURCES.items():
        p = ROOT / path
        times[stage] = json.loads(p.read_text())["seconds"]["total"] if p.exists() else None
    return times


def ppo_flops(r: dict, models_trained: int, models_scoring: int) -> float:
    """Model FLOPs of one measured PPO iteration (mean): generation 2PT over prompt+response (prefill
    and decode), `models_scoring` frozen or no-grad forwards 2PT, `models_trained` updates 6PT."""
    n = len(r["iters"])
    tokens, params = r["total"]["tokens"] / n, r["params"]
    return params * tokens * (2 + 2 * models_scoring + 6 * models_trained)


def ceiling(res: dict) -> tuple[float, str]:
    """The FLOP/s every MFU figure is held to: the best matmul rate of the fastest dtype this CPU has matrix
    units for (bf16 with AMX or AVX-512 BF16, else fp32), at the start or the end of the run; and its name."""
    mm, mm2 = res["matmul"], res["matmul_end"]
    units = [f for f in mm["machine"]["simd"] if f in ("amx_bf16", "avx512_bf16")]
    dtype = "bf16" if units else "fp32"
    return max(mm[f"{dtype}_gflops"], mm2[f"{dtype}_gflops"]) * 1e9, dtype


def derive(res: dict) -> dict:
    """The figures the table shows, each next to its target."""
    sft, sft32, gae, gae32, grpo, trl = (res[k] for k in ("sft", "sft_fp32", "ppo_gae", "ppo_gae_fp32", "ppo_grpo",
                                                            "trl_grpo"))
    peak, peak_dtype = ceiling(res)
    fp32_peak = max(res["matmul"]["fp32_gflops"], res["matmul_end"]["fp32_gflops"]) * 1e9
    train_rate = lambda r, models: 6 * r["params"] * r["total"]["tokens"] * models / r["total"]["train"]
    d = {
        "ceiling_gflops": peak / 1e9, "ceiling_dtype": peak_dtype, "fp32_gflops": fp32_peak / 1e9,
        "bf16_gflops": max(res["matmul"]["bf16_gflops"], res["matmul_end"]["bf16_gflops"]),
        "sft_mfu": 6 * sft["params"] * sft["tokens_per_s"] / peak,
        "sft_fp32_mfu": 6 * sft32["params"] * sft32["tokens_per_s"] / peak,
        "sft_speedup": sft["tokens_per_s"] / sft32["tokens_per_s"],
        # gae trains actor and critic (critic counted at the actor's size); grpo the actor only
        "ppo_train_mfu_gae": train_rate(gae, 2) / peak,
        "ppo_train_mfu_gae_fp32": train_rate(gae32, 2) / peak,
        "ppo_train_mfu_grpo": train_rate(grpo, 1) / peak,
        # whole iteration: gae = p_SFT, p_PT, actor, critic forwards; grpo = p_SFT, p_PT, actor;
        # TRL = p_SFT (ref), p_SFT and p_PT (reward), actor (old log-probs)
        "ppo_iter_mfu_gae": ppo_flops(gae, 2, 4) * len(gae["iters"]) / gae["total"]["seconds"] / peak,
        "ppo_speedup": gae["tokens_per_s"] / gae32["tokens_per_s"],
        "rollout_ratio": res["rollout"]["ratio"], "rollout_best": res["rollout"]["best"],
        "grpo_vs_trl": grpo["tokens_per_s"] / trl["tokens_per_s"],
        "gae_vs_trl": gae["tokens_per_s"] / trl["tokens_per_s"],
        "rss_gae": gae["peak_rss_bytes"], "rss_gae_fp32": gae32["peak_rss_bytes"], "rss_grpo": grpo["peak_rss_bytes"],
        "rss_trl": trl["peak_rss_bytes"], "rss_lora": res["ppo_gae_lora"]["peak_rss_bytes"],
        "gae_tps": gae["tokens_per_s"], "gae_fp32_tps": gae32["tokens_per_s"], "grpo_tps": grpo["tokens_per_s"],
        "trl_tps": trl["tokens_per_s"], "lora_gae_tps": res["ppo_gae_lora"]["tokens_per_s"],
        "sft_tps": sft["tokens_per_s"], "sft_fp32_tps": sft32["tokens_per_s"],
        "noop_s": res["dvc"].get("noop_s"),
        "repro_s": sum(v for v in res["stage_times"].values() if v),
    }
    return d


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def gb(x) -> str:
    return "–" if x is None else f"{x / GB:.2f} GB"


def table(res: dict, d: dict, cmd: str) -> list[str]:
    mm, mm2, sft, sft32, r, dvc = (res[k] for k in ("matmul", "matmul_end", "sft", "sft_fp32", "rollout", "dvc"))
    rate = lambda k: (f"{max(mm[k + '_gflops'], mm2[k + '_gflops']):.0f} GFLOP/s (best 0.5 s window; start "
                      f"{mm[k + '_gflops']:.0f}, end {mm2[k + '_gflops']:.0f}; medians {mm[k + '_gflops_median']:.0f}, "
                      f"{mm2[k + '_gflops_median']:.0f})")
    gae, gae32, grpo, trl = res["ppo_gae"], res["ppo_gae_fp32"], res["ppo_grpo"], res["trl_grpo"]
    noop, st, b = dvc.get("noop_s"), res["stage_times"], res["bf16"]
    ceil = f"of the {d['ceiling_dtype']} ceiling"
    tps = r["tps"]
    rows = [
        ("matmul rate fp32 (2048², 2 threads, at the start and the end of the run)", rate("fp32"), "–", "–",
         mm["command"]),
        ("matmul rate bf16 (same)" + (" = the ceiling of every MFU figure" if d["ceiling_dtype"] == "bf16" else ""),
         rate("bf16"), "–", "–", mm["command"]),
        (f"SFT training ({sft['steps']} steps of {sft['batch_size']}, first step excluded): default "
         f"(autocast {sft['autocast']}{', packed rows' if sft.get('packing') else ''}) vs fp32 (padded rows); tokens "
         "without padding", f"{sft['tokens_per_s']:.0f} vs {sft32['tokens_per_s']:.0f} tokens/s = "
         f"{d['sft_speedup']:.2f}x", "≥ 2.5x", verdict(d["sft_speedup"] >= TARGETS["sft_speedup"]),
         f"{sft['command']}; {sft32['command']}"),
        ("SFT training MFU (6 × params × tokens)", f"{d['sft_mfu']:.0%} {ceil} (fp32 path: {d['sft_fp32_mfu']:.0%})",
         "≥ 25 %", verdict(d["sft_mfu"] >= TARGETS["mfu"]), sft["command"]),
        ("PPO iteration, gae (the default's work): default vs the fp32 + hf-engine path",
         f"{gae['tokens_per_s']:.1f} vs {gae32['tokens_per_s']:.1f} tokens/s = {d['ppo_speedup']:.2f}x", "≥ 2.5x",
         verdict(d["ppo_speedup"] >= TARGETS["ppo_speedup"]), f"{gae['command']}; {gae32['command']}"),
        ("PPO update phase MFU, gae (actor + critic)", f"{d['ppo_train_mfu_gae']:.0%} {ceil} (fp32 path: "
         f"{d['ppo_train_mfu_gae_fp32']:.0%})", "≥ 25 %", verdict(d["ppo_train_mfu_gae"] >= TARGETS["mfu"]),
         gae["command"]),
        ("PPO update phase MFU, grpo (actor only)", f"{d['ppo_train_mfu_grpo']:.0%} {ceil}", "≥ 25 %",
         verdict(d["ppo_train_mfu_grpo"] >= TARGETS["mfu"]), grpo["command"]),
        ("PPO whole iteration, gae (generation, 4 forwards, 2 updates), information",
         f"≈ {d['ppo_iter_mfu_gae']:.0%} {ceil}", "–", "–", gae["command"]),
        (f"rollout engine ({d['rollout_best']}) vs one prompt at a time in fp32 ({r['prompts']} prompts, "
         f"{r['max_new_tokens']} new tokens; hf batch {r['batch_size']})",
         f"{tps[d['rollout_best']]:.1f} vs {r['naive_tps']:.1f} tokens/s = {d['rollout_ratio']:.2f}x (every engine: "
         + ", ".join(f"{k} {v:.1f}" for k, v in tps.items()) + ")", "≥ 8x",
         verdict(d["rollout_ratio"] >= TARGETS["rollout"]), r["command"]),
        ("PPO iteration, srppo grpo vs TRL GRPOTrainer (bf16 autocast on both where the CPU has the units)",
         f"{grpo['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} tokens/s = {d['grpo_vs_trl']:.2f}x", "≥ 3x",
         verdict(d["grpo_vs_trl"] >= TARGETS["vs_trl"]), f"{grpo['command']}; {trl['command']}"),
        # not the same work: TRL has no critic, so this row informs and the grpo row holds the target
        ("PPO iteration, srppo gae vs TRL GRPOTrainer (gae adds a critic forward and critic updates)",
         f"{gae['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} tokens/s = {d['gae_vs_trl']:.2f}x", "–", "–",
         f"{gae['command']}; {trl['command']}"),
        (f"bf16 autocast vs fp32 for the frozen forwards ({b['rows']} p_SFT samples from data/rollouts): the "
         "coherent reward", f"mean gap {b['reward_gap_mean']:.3f} nats (max {b['reward_gap_max']:.3f}) against a "
         f"spread of {b['reward_std']:.2f} across samples ({b['reward_gap_mean'] / b['reward_std']:.1%}); "
         f"correlation {b['reward_corr']:.4f}", f"≤ {REWARD_TOLERANCE:.0%} of the spread",
         verdict(b["reward_gap_mean"] <= REWARD_TOLERANCE * b["reward_std"]), b["command"]),
        ("same: the return PPO learns from, r − β·KL (β = "
         f"{b['beta']} per nat; KL of the trained actor, data/ppo, to p_SFT)",
         f"mean gap {b['return_gap_mean']:.3f} nats against a spread of {b['return_std']:.2f} "
         f"({b['return_gap_mean'] / b['return_std']:.1%}); correlation {b['return_corr']:.4f}",
         f"≤ {REWARD_TOLERANCE:.0%} of the spread", verdict(b["return_gap_mean"] <= REWARD_TOLERANCE * b["return_std"]),
         b["command"]),
        ("same: the KL alone, per sequence (information: what `ppo.kl` curves and a KL ceiling read)",
         f"mean gap {b['kl_gap_mean']:.3f} nats (max {b['kl_gap_max']:.3f}, bias {b['kl_bias']:+.3f}) against a "
         f"spread of {b['kl_std']:.2f}; correlation {b['kl_corr']:.4f}", "–", "–", b["command"]),
        ("PPO peak RSS, full fine-tuning (gae: actor, critic, p_SFT, p_PT, 2 Adam states)",
         f"{gb(d['rss_gae'])} (fp32 path {gb(d['rss_gae_fp32'])})", "≤ 6 GB",
         verdict(None if d["rss_gae"] is None else d["rss_gae"] <= TARGETS["rss_full"]), gae["command"]),
        (f"PPO peak RSS, LoRA (gae; rank {LORA_RANK} on every linear layer, one shared base)", gb(d["rss_lora"]),
         "≤ 3 GB", verdict(None if d["rss_lora"] is None else d["rss_lora"] <= TARGETS["rss_lora"]),
         res["ppo_gae_lora"]["command"]),
        ("full `dvc repro`, embedded default (sum of the stages' own seconds, last full run, reports/*.json)",
         f"{d['repro_s']:.0f} s = {d['repro_s'] / 60:.1f} min", "≤ 6 min",
         verdict(d["repro_s"] <= TARGETS["repro_s"] if d["repro_s"] else None), "python bench/stage_times.py"),
        ("no-op `dvc repro` (fresh copy of HEAD, smoke preset, after a full run; median of 3)",
         "–" if noop is None else f"{noop:.1f} s", "≤ 10 s", verdict(None if noop is None else noop <= TARGETS["noop_s"]),
         cmd),
    ]
    out = ["| measure | value | target | | regenerate |", "|---|---|---|---|---|"]
    out += [f"| {a} | {b_} | {c} | {v} | `{e}` |" for a, b_, c, v, e in rows]
    out += ["", "Full `dvc repro` per stage (s, each stage's own work, from reports/*.json): "
            + ", ".join(f"{k} {v:.0f}" for k, v in st.items() if v is not None) + "."]
    out.append(f"The frozen p_SFT/p_PT forwards under bf16 autocast took {b['bf16_s']:.2f} s against {b['fp32_s']:.2f} s "
               f"in fp32 ({b['fp32_s'] / b['bf16_s']:.2f}x). Their tolerance: the mean error bf16 adds to a sample's "
               f"coherent reward, and to its return r − β·KL, at most {REWARD_TOLERANCE:.0%} of that quantity's spread "
               "across samples, which is what PPO's advantages are made of; the normalised reward moves by "
               f"{b['reward_gap_normalised_mean']:.3f} on average (scale {b['norm_scale']:.2f}). The KL alone is a small "
               "difference of two long sums and carries bf16's rounding of both: per sequence its error is a large "
               "part of its own spread, averaged over a buffer it is the bias shown.")
    if dvc.get("error"):
        out.append(dvc["error"])
    if dvc.get("smoke_full_s"):
        out.append(f"The smoke preset's full `dvc repro` on the fresh copy took {dvc['smoke_full_s']:.0f} s; "
                   f"no-op runs {', '.join(f'{s:.1f}' for s in dvc['noop_runs_s'])} s "
                   f"(`dvc status` after: {dvc['status_after'] or 'empty'}).")
    return out


# bf16 may serve the frozen forwards when its error is this small a part of the spread PPO learns from
REWARD_TOLERANCE = 0.05
LORA_RANK = 16  # srppo.config.params.LoRAConfig's default, which the lora variant uses

# before/after rows: derived key, label, format
CHANGES = [("sft_tps", "SFT training, tokens/s", "{:.0f}"), ("gae_tps", "PPO iteration gae, tokens/s", "{:.1f}"),
           ("grpo_tps", "PPO iteration grpo, tokens/s", "{:.1f}"),
           ("grpo_vs_trl", "PPO iteration grpo / TRL GRPO (same run)", "{:.2f}x"),
           ("rollout_ratio", "rollout engine / one prompt at a time (same run)", "{:.2f}x"),
           ("rss_gae", "PPO peak RSS, full fine-tuning", "gb"), ("rss_lora", "PPO peak RSS, LoRA", "gb"),
           ("repro_s", "full `dvc repro` of the embedded default, s", "{:.0f}"), ("noop_s", "no-op `dvc repro`, s", "{:.1f}")]


def before_after(d: dict, before: dict | None) -> list[str]:
    """The derived figures next to those of an earlier run (its JSON); the same run's fp32 path."""
    out = ["", "## The same run's fp32 path against the default", "",
           f"SFT {d['sft_fp32_tps']:.0f} → {d['sft_tps']:.0f} tokens/s ({d['sft_speedup']:.2f}x); PPO gae "
           f"{d['gae_fp32_tps']:.1f} → {d['gae_tps']:.1f} tokens/s ({d['ppo_speedup']:.2f}x); PPO peak RSS "
           f"{gb(d['rss_gae_fp32'])} → {gb(d['rss_gae'])}."]
    if before is None:
        return out
    old = {**before["derived"], "noop_s": before.get("dvc", {}).get("noop_s"), "sft_tps": before["sft"]["tokens_per_s"],
           "gae_tps": before["ppo_gae"]["tokens_per_s"], "grpo_tps": before["ppo_grpo"]["tokens_per_s"]}
    cell = lambda fmt, v: "–" if v is None else (gb(v) if fmt == "gb" else fmt.format(v))
    out += ["", "## Against an earlier run", "",
            f"Before: {before.get('label', 'the earlier run')}. After: this run. Absolute rates come from two runs "
            "on a shared VM (±10 %); the ratios are each measured within one run, and their baselines may differ "
            "(the earlier TRL row ran TRL in fp32).", "",
            "| measure | before | after |", "|---|---|---|"]
    out += [f"| {label} | {cell(fmt, old.get(key))} | {cell(fmt, d.get(key))} |" for key, label, fmt in CHANGES]
    return out


def phases(res: dict) -> list[str]:
    """Seconds per iteration (mean of the measured iterations) by phase, srppo vs TRL."""
    cols = [("srppo gae, fp32 path", res["ppo_gae_fp32"]), ("srppo gae", res["ppo_gae"]), ("srppo grpo", res["ppo_grpo"]),
            ("TRL GRPO", res["trl_grpo"])]
    keys = [("generate", f"generation (sampling {res['trl_grpo']['buffer']} rollouts)"),
            ("score", "reward: p_SFT + p_PT forwards"),
            ("actor_critic_forward", "other no-grad forwards (srppo: actor [+ critic]; TRL: reference p_SFT + actor)"),
            ("train_actor", "actor updates (2 optimizer steps)"), ("train_critic", "critic updates (2 steps)"),
            ("seconds", "**iteration**")]
    out = ["| phase | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for key, label in keys:
        cells = []
        for _, r in cols:
            n, v, total = len(r["iters"]), r["total"][key], r["total"]["seconds"]
            cells.append(f"{v / n:.1f} s ({v / total:.0%})")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    toks = lambda r: (f"{r['total']['tokens'] / len(r['iters']):.0f} tokens "
                      f"({r['total']['response_tokens'] / len(r['iters']):.0f} generated)")
    out.append("| tokens per iteration (prompt + response, no padding) | " + " | ".join(toks(r) for _, r in cols) + " |")
    # the spread says how far to trust a ratio: a 2-core VM shared with other jobs varies by ~10 %
    out.append("| tokens/s of each measured iteration | "
               + " | ".join(", ".join(f"{i['tokens_per_s']:.1f}" for i in r["iters"]) for _, r in cols) + " |")
    return out


def report(res: dict, d: dict, cmd: str, before: dict | None = None) -> str:
    m, gae, trl = res["matmul"]["machine"], res["ppo_gae"], res["trl_grpo"]
    units = [f for f in m["simd"] if f in ("amx_bf16", "avx512_bf16")]
    head = [
        "# Benchmarks: the embedded default against its performance targets", "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), SIMD {', '.join(m['simd'])}; "
        f"bf16 matrix units: {', '.join(units) or 'none'}; torch {m['torch']} with {m['torch_threads']} threads, "
        f"transformers {m['transformers']}, TRL {trl['trl']}, Python {m['python']}. Model SmolLM2-135M "
        f"({gae['params'] / 1e6:.1f}M parameters), CPU. The default is `runtime.precision: auto`, here bf16 autocast "
        f"({gae['autocast']}) over fp32 weights; the fp32 path is `runtime.precision: fp32` with the hf engine, "
        f"the code's path before mixed precision. Load average {res['load'][0]:.2f} at the start, {res['load'][1]:.2f} "
        f"at the end. Generated by `{cmd}` at commit {res.get('commit', 'unknown')} in {res['wall_s'] / 60:.1f} min; "
        "raw figures in benchmarks.json.", "",
        "FLOPs are estimated as 6 × parameters × tokens for a training step and 2 × parameters × tokens for "
        "a forward (generation, scoring), tokens = non-padding prompt + response tokens. Every MFU figure is held "
        f"to one ceiling: the best {d['ceiling_dtype']} matmul rate measured in the same run, at its start and end "
        f"({d['ceiling_gflops']:.0f} GFLOP/s), the fastest dtype this CPU has matrix units for. This overstates the "
        "work of the forwards: the LM head (a fifth of the parameters, tied to the embedding) runs only on the "
        "response suffix in srppo's scoring and training forwards, and the critic has none; so the percentages "
        "are upper estimates, and the whole-iteration figure, which adds generation (memory-bound decoding "
        "counted at 2 × parameters per token), is information only. Each row runs in its own process; a PPO "
        f"iteration's first run is a warm-up and is not counted ({len(gae['iters'])} measured iterations per PPO row).",
        ""]
    notes = [
        "", "## PPO iteration: srppo vs TRL, where the time goes", "",
        f"Same model and start (p_SFT), same prompt records in the same order, {trl['buffer']} rollouts per "
        f"iteration ({trl['prompts_per_iter']} prompts × {trl['group_size']} samples for grpo and TRL, "
        f"{gae['prompts_per_iter']} distinct prompts for gae), at most {trl['max_new_tokens']} new tokens at "
        "temperature 1, Adam lr 1e-5, "
        f"{trl['buffer'] // trl['mini_batch_size']} optimizer steps of {trl['mini_batch_size']} rollouts, one "
        "epoch, KL coefficient 0.2 to p_SFT, the coherent reward (srppo's `score()` and calibrated normaliser "
        "as TRL's reward function: both sides run each distinct prompt's p_SFT/p_PT forward once per group). "
        f"TRL runs at its best CPU setting: `bf16={trl.get('bf16')}` (autocast through accelerate, fp32 master "
        "weights) where the CPU has bf16 units, its reward under the same autocast as srppo's; gradient checkpointing "
        "off (nothing here needs the memory). What differs by design: TRL has no critic (so srppo grpo is the "
        "like-for-like row; gae adds a critic forward and its updates), TRL runs p_SFT twice (reference for its KL "
        "term, and in the reward) where srppo runs it once for both, TRL puts the KL in the loss and srppo in the "
        "reward, srppo's engine prefills a prompt once per group where TRL's generate() prefills every row, and "
        "sampled responses differ in length, hence the rate in tokens/s.", "", *phases(res)]
    return "\n".join(head + table(res, d, cmd) + before_after(d, before) + notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny workloads (smoke check), no dvc runs")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only re-render the markdown from a saved JSON")
    ap.add_argument("--out", type=Path, help="markdown path (default docs/results/benchmarks.md; "
                    "/tmp/srppo-bench-quick.md with --quick); the JSON goes next to it")
    ap.add_argument("--before", type=Path, default=ROOT / "docs/results/benchmarks-before.json",
                    help="an earlier run's JSON for the before/after table (default: the run before the speedups)")
    a = ap.parse_args()
    before = json.loads(a.before.read_text()) if a.before and a.before.exists() else None
    out = a.out or (Path("/tmp/srppo-bench-quick.md") if a.quick else ROOT / "docs/results/benchmarks.md")
    q = ["--quick"] if a.quick else []
    cmd = shlex.join(["python", "bench/run.py", *q])
    if a.render:  # same figures, new layout: no measurement is repeated
        saved = json.loads(a.render.read_text())
        out.write_text(report(saved, derive(saved), cmd, before))
        return
    t, load0 = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="srppo-bench-") as tmp:
        tmp = Path(tmp)
        w = lambda *args: ["bench/workloads.py", *args, *q]
        res = {
            "matmul": child(w("matmul"), tmp / "matmul.json"),
            "sft": child(w("sft"), tmp / "sft.json"),
            "sft_fp32": child(w("sft", "--precision", "fp32"), tmp / "sft_fp32.json"),
            "rollout": child(w("rollout"), tmp / "rollout.json"),
            "bf16": child(w("bf16"), tmp / "bf16.json"),
            "ppo_gae": child(w("ppo", "--estimator", "gae"), tmp / "ppo_gae.json"),
            "ppo_gae_fp32": child(w("ppo", "--estimator", "gae", "--precision", "fp32"), tmp / "ppo_gae_fp32.json"),
            "ppo_grpo": child(w("ppo", "--estimator", "grpo"), tmp / "ppo_grpo.json"),
            "ppo_gae_lora": child(w("ppo", "--estimator", "gae", "--variant", "lora"), tmp / "ppo_gae_lora.json"),
            "trl_grpo": child(["bench/trl_grpo.py", *q], tmp / "trl_grpo.json"),
            # again at the end: the rate the rows are held to is the better of the two (a busy moment
            # at the start would otherwise flatter every percentage)
            "matmul_end": child(w("matmul"), tmp / "matmul_end.json"),
        }
        res["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                   text=True, check=False).stdout.strip() or "unknown"
    res["dvc"] = dvc_noop(a.quick)
    res["stage_times"] = stage_times()
    res["wall_s"], res["load"] = time.perf_counter() - t, (load0, os.getloadavg()[0])
    d = derive(res)
    text = report(res, d, cmd, before)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"derived": d, **res}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
