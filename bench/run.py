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
TARGETS = {"repro_s": 20 * 60, "mfu": 0.40, "rollout": 3.0, "vs_trl": 1.5, "rss_full": 6 * GB, "rss_lora": 3 * GB,
           "noop_s": 10.0}


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


def derive(res: dict) -> dict:
    """The figures the table shows, each next to its target."""
    mm, sft, gae, grpo, trl = (res[k] for k in ("matmul", "sft", "ppo_gae", "ppo_grpo", "trl_grpo"))
    peak = max(mm["fp32_gflops"], res["matmul_end"]["fp32_gflops"]) * 1e9
    train_rate = lambda r, models: 6 * r["params"] * r["total"]["tokens"] * models / r["total"]["train"]
    d = {
        "sft_mfu": 6 * sft["params"] * sft["tokens_per_s"] / peak,
        # gae trains actor and critic (critic counted at the actor's size); grpo the actor only
        "ppo_train_mfu_gae": train_rate(gae, 2) / peak,
        "ppo_train_mfu_grpo": train_rate(grpo, 1) / peak,
        # the same with the FLOPs actually run: a recomputed forward adds 2 x params x tokens per model
        "ppo_train_hfu_gae": train_rate(gae, 2) * (8 / 6 if gae.get("recompute_activations") else 1) / peak,
        # whole iteration: gae = p_SFT, p_PT, actor, critic forwards; grpo = p_SFT, p_PT, actor;
        # TRL = p_SFT (ref), p_SFT and p_PT (reward), actor (old log-probs)
        "ppo_iter_mfu_gae": ppo_flops(gae, 2, 4) * len(gae["iters"]) / gae["total"]["seconds"] / peak,
        "ppo_iter_mfu_grpo": ppo_flops(grpo, 1, 3) * len(grpo["iters"]) / grpo["total"]["seconds"] / peak,
        "ppo_iter_mfu_trl": ppo_flops(trl, 1, 4) * len(trl["iters"]) / trl["total"]["seconds"] / peak,
        "fp32_gflops": peak / 1e9, "bf16_gflops": max(mm["bf16_gflops"], res["matmul_end"]["bf16_gflops"]),
        "rollout_ratio": res["rollout"]["ratio"],
        "grpo_vs_trl": grpo["tokens_per_s"] / trl["tokens_per_s"],
        "gae_vs_trl": gae["tokens_per_s"] / trl["tokens_per_s"],
        "rss_gae": gae["peak_rss_bytes"], "rss_grpo": grpo["peak_rss_bytes"], "rss_trl": trl["peak_rss_bytes"],
        "rss_lora": res["ppo_gae_lora"]["peak_rss_bytes"], "gae_tps": gae["tokens_per_s"],
        "grpo_tps": grpo["tokens_per_s"], "lora_gae_tps": res["ppo_gae_lora"]["tokens_per_s"],
        "gae_knobs_off_tps": res["ppo_gae_knobs_off"]["tokens_per_s"],
        "grpo_knobs_off_tps": res["ppo_grpo_knobs_off"]["tokens_per_s"],
        **({"ppo_train_mfu_gae_kept": train_rate(res["ppo_gae_no_recompute"], 2) / peak,
            "rss_gae_kept": res["ppo_gae_no_recompute"]["peak_rss_bytes"],
            "gae_kept_tps": res["ppo_gae_no_recompute"]["tokens_per_s"]} if "ppo_gae_no_recompute" in res else {}),
        "noop_s": res["dvc"].get("noop_s"),
        "repro_s": sum(v for v in res["stage_times"].values() if v),
    }
    return d


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def gb(x) -> str:
    return "–" if x is None else f"{x / GB:.2f} GB"


def table(res: dict, d: dict, cmd: str) -> list[str]:
    mm, mm2, sft, r, dvc = res["matmul"], res["matmul_end"], res["sft"], res["rollout"], res["dvc"]
    rate = lambda k: (f"{d[k + '_gflops']:.0f} GFLOP/s (best 0.5 s window; start {mm[k + '_gflops']:.0f}, end "
                      f"{mm2[k + '_gflops']:.0f}; medians {mm[k + '_gflops_median']:.0f}, {mm2[k + '_gflops_median']:.0f})")
    gae, grpo, trl = res["ppo_gae"], res["ppo_grpo"], res["trl_grpo"]
    noop = dvc.get("noop_s")
    st = res["stage_times"]
    rows = [
        ("matmul rate fp32 (2048², 2 threads, at the start and the end of the run)", rate("fp32"), "–", "–",
         mm["command"]),
        ("matmul rate bf16 (same)", rate("bf16"), "–", "–", mm["command"]),
        (f"SFT training, fp32 ({sft['steps']} steps of {sft['batch_size']}, first step excluded)",
         f"{sft['tokens_per_s']:.0f} tokens/s = {d['sft_mfu']:.0%} of fp32 matmul", "≥ 40 %",
         verdict(d["sft_mfu"] >= TARGETS["mfu"]), sft["command"]),
        ("PPO update phase, gae (actor + critic; activations recomputed in backward, the recompute not counted)",
         f"{6 * 2 * gae['params'] * gae['total']['tokens'] / gae['total']['train']:.2e} FLOP/s = "
         f"{d['ppo_train_mfu_gae']:.0%}" + (f" (with the recompute: {d['ppo_train_hfu_gae']:.0%})"
                                             if gae.get("recompute_activations") else ""),
         "≥ 40 %", verdict(d["ppo_train_mfu_gae"] >= TARGETS["mfu"]), gae["command"]),
        ("PPO update phase, grpo (actor only)",
         f"{6 * grpo['params'] * grpo['total']['tokens'] / grpo['total']['train']:.2e} FLOP/s = "
         f"{d['ppo_train_mfu_grpo']:.0%}", "≥ 40 %", verdict(d["ppo_train_mfu_grpo"] >= TARGETS["mfu"]),
         grpo["command"]),
        # information, not a target: forwards and generation estimated like training (see the notes)
        ("PPO whole iteration, gae (generation, 4 forwards, 2 updates)",
         f"{gae['tokens_per_s']:.1f} tokens/s ≈ {d['ppo_iter_mfu_gae']:.0%}", "–", "–", gae["command"]),
        (f"rollout: HF engine batch {r['batch_size']} vs one prompt at a time ({r['prompts']} prompts, "
         f"{r['max_new_tokens']} new tokens)", f"{r['batched_tps']:.1f} vs {r['naive_tps']:.1f} tokens/s = "
         f"{d['rollout_ratio']:.2f}x", "≥ 3x", verdict(d["rollout_ratio"] >= TARGETS["rollout"]), r["command"]),
        ("PPO iteration, srppo grpo vs TRL GRPOTrainer", f"{grpo['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} "
         f"tokens/s = {d['grpo_vs_trl']:.2f}x", "≥ 1.5x", verdict(d["grpo_vs_trl"] >= TARGETS["vs_trl"]),
         f"{grpo['command']}; {trl['command']}"),
        # not the same work: TRL has no critic, so this row informs and the grpo row holds the target
        ("PPO iteration, srppo gae vs TRL GRPOTrainer (gae adds a critic forward and critic updates)",
         f"{gae['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} tokens/s = {d['gae_vs_trl']:.2f}x", "–", "–",
         f"{gae['command']}; {trl['command']}"),
        (f"bf16 instead of fp32 for the frozen p_SFT/p_PT forwards (p_SFT, {res['bf16']['rows']} demonstrations)",
         f"log-prob gap per token mean {res['bf16']['token_gap_mean']:.3f}, max {res['bf16']['token_gap_max']:.2f} nats; "
         f"per sequence {res['bf16']['sequence_gap_mean']:.2f} nats; forward {res['bf16']['fp32_s']:.2f} s fp32 vs "
         f"{res['bf16']['bf16_s']:.2f} s bf16", "–", "–", res["bf16"]["command"]),
        ("PPO peak RSS, full fine-tuning (gae: actor, critic, p_SFT, p_PT, 2 Adam states)", gb(d["rss_gae"]),
         "≤ 6 GB", verdict(None if d["rss_gae"] is None else d["rss_gae"] <= TARGETS["rss_full"]), gae["command"]),
        (f"PPO peak RSS, LoRA (gae; rank {LORA_RANK} on every linear layer, one shared base)", gb(d["rss_lora"]),
         "≤ 3 GB", verdict(None if d["rss_lora"] is None else d["rss_lora"] <= TARGETS["rss_lora"]),
         res["ppo_gae_lora"]["command"]),
        ("full `dvc repro`, embedded default (sum of the stages' own seconds, last full run, reports/*.json)",
         f"{d['repro_s']:.0f} s = {d['repro_s'] / 60:.1f} min", "≤ 20 min",
         verdict(d["repro_s"] <= TARGETS["repro_s"] if d["repro_s"] else None), "python bench/stage_times.py"),
        ("no-op `dvc repro` (fresh copy of HEAD, smoke preset, after a full run; median of 3)",
         "–" if noop is None else f"{noop:.1f} s", "≤ 10 s", verdict(None if noop is None else noop <= TARGETS["noop_s"]),
         cmd),
    ]
    out = ["| measure | value | target | | regenerate |", "|---|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {v} | `{e}` |" for a, b, c, v, e in rows]
    out += ["", "Full `dvc repro` per stage (s, each stage's own work, from reports/*.json): "
            + ", ".join(f"{k} {v:.0f}" for k, v in st.items() if v is not None) + "."]
    b = res["bf16"]
    speed = b["fp32_s"] / b["bf16_s"]
    out.append(f"bf16 for the frozen forwards: on this CPU p_SFT's bf16 forward takes {b['bf16_s']:.2f} s against "
               f"{b['fp32_s']:.2f} s in fp32 ({speed:.2f}x), but it moves each sequence's log-probability by "
               f"{b['sequence_gap_mean']:.2f} nats on average (up to {b['token_gap_max']:.2f} per token): the coherent "
               "reward is a difference of two such sums and the KL term compares them with the fp32 actor's, so "
               "an error of that size is not noise to PPO. The frozen forwards stay fp32 on CPU; `runtime.dtype` "
               "sets bf16 for a whole run (GPU presets).")
    if dvc.get("error"):
        out.append(dvc["error"])
    if dvc.get("smoke_full_s"):
        out.append(f"The smoke preset's full `dvc repro` on the fresh copy took {dvc['smoke_full_s']:.0f} s; "
                   f"no-op runs {', '.join(f'{s:.1f}' for s in dvc['noop_runs_s'])} s "
                   f"(`dvc status` after: {dvc['status_after'] or 'empty'}).")
    return out


LORA_RANK = 16  # srppo.config.params.LoRAConfig's default, which the lora variant uses

# before/after rows: derived key, label, format
CHANGES = [("sft_mfu", "SFT training, fraction of fp32 matmul", "{:.0%}"),
           ("ppo_train_mfu_gae", "PPO update phase gae, fraction of fp32 matmul", "{:.0%}"),
           ("ppo_train_mfu_grpo", "PPO update phase grpo, fraction of fp32 matmul", "{:.0%}"),
           ("gae_tps", "PPO iteration gae, tokens/s", "{:.1f}"), ("grpo_tps", "PPO iteration grpo, tokens/s", "{:.1f}"),
           ("grpo_vs_trl", "PPO iteration grpo / TRL GRPO (same run)", "{:.2f}x"),
           ("gae_vs_trl", "PPO iteration gae / TRL GRPO (same run)", "{:.2f}x"),
           ("rollout_ratio", "rollout batched / naive (same run)", "{:.2f}x"),
           ("rss_gae", "PPO peak RSS, full fine-tuning", "gb"), ("rss_lora", "PPO peak RSS, LoRA", "gb"),
           ("repro_s", "full `dvc repro` of the embedded default, s", "{:.0f}"), ("noop_s", "no-op `dvc repro`, s", "{:.1f}")]


def before_after(d: dict, before: dict | None) -> list[str]:
    """The derived figures next to those of an earlier run (its JSON), and the same run's ablation."""
    if before is None:
        return []
    old = {**before["derived"], "noop_s": before.get("dvc", {}).get("noop_s"),
           "gae_tps": before["ppo_gae"]["tokens_per_s"], "grpo_tps": before["ppo_grpo"]["tokens_per_s"]}
    cell = lambda fmt, v: "–" if v is None else (gb(v) if fmt == "gb" else fmt.format(v))
    out = ["", "## Before and after the speed and memory changes", "",
           f"Before: {before.get('label', 'the earlier run')}. After: this run. Absolute rates come from two runs "
           "on a shared VM (±10 %); the ratios are each measured within one run.", "",
           "| measure | before | after |", "|---|---|---|"]
    out += [f"| {label} | {cell(fmt, old.get(key))} | {cell(fmt, d.get(key))} |" for key, label, fmt in CHANGES]
    if "rss_gae_kept" in d:
        out += ["", "Same run, gae with its activations kept (`ppo.activation_checkpointing: false`) vs recomputed "
                f"(the default for full fine-tuning with a critic): peak RSS {gb(d['rss_gae_kept'])} → "
                f"{gb(d['rss_gae'])}, update phase {d['ppo_train_mfu_gae_kept']:.0%} → {d['ppo_train_mfu_gae']:.0%} "
                f"of fp32 matmul, whole iteration {d['gae_kept_tps']:.1f} → {d['gae_tps']:.1f} tokens/s."]
    out += ["", "Same run, the two PPO knobs off (`ppo.logp_old: actor`, `ppo.group_by_length: false`) vs on: "
            f"gae {d['gae_knobs_off_tps']:.1f} → {d['gae_tps']:.1f} tokens/s "
            f"({d['gae_tps'] / d['gae_knobs_off_tps']:.2f}x), grpo {d['grpo_knobs_off_tps']:.1f} → "
            f"{d['grpo_tps']:.1f} tokens/s ({d['grpo_tps'] / d['grpo_knobs_off_tps']:.2f}x). "
            f"LoRA (gae) runs at {d['lora_gae_tps']:.1f} tokens/s ({d['lora_gae_tps'] / d['gae_tps']:.2f}x full "
            "fine-tuning: every linear layer adds its adapter's two small matmuls)."]
    return out


def phases(res: dict) -> list[str]:
    """Seconds per iteration (mean of the measured iterations) by phase, srppo vs TRL."""
    cols = [("srppo gae", res["ppo_gae"]), ("srppo grpo", res["ppo_grpo"]), ("TRL GRPO", res["trl_grpo"])]
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
    head = [
        "# Benchmarks: the embedded default against its performance targets", "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), SIMD {', '.join(m['simd'])}; "
        f"torch {m['torch']} with {m['torch_threads']} threads, transformers {m['transformers']}, "
        f"TRL {trl['trl']}, Python {m['python']}. Model SmolLM2-135M ({gae['params'] / 1e6:.1f}M parameters), "
        f"fp32, CPU. Load average {res['load'][0]:.2f} at the start, {res['load'][1]:.2f} at the end. "
        f"Generated by `{cmd}` at commit {res.get('commit', 'unknown')} in {res['wall_s'] / 60:.1f} min; raw "
        "figures in benchmarks.json.", "",
        "FLOPs are estimated as 6 × parameters × tokens for a training step and 2 × parameters × tokens for "
        "a forward (generation, scoring), tokens = non-padding prompt + response tokens; the rate is held "
        "to the best fp32 matmul rate measured in the same run, at its start and end (the models train in "
        "fp32; bf16 shown for reference). This overstates the work of the forwards: the LM head (a fifth of the parameters, tied "
        "to the embedding) runs only on the response suffix in srppo's scoring and training forwards, and the "
        "critic has none; so the percentages are upper estimates, and the whole-iteration figure, which adds "
        "generation (memory-bound decoding counted at 2 × parameters per token), is information only. "
        "Each row runs in its own process; a PPO iteration's first run is a warm-up and is "
        f"not counted ({len(gae['iters'])} measured iterations per PPO row).", ""]
    notes = [
        "", "## PPO iteration: srppo vs TRL, where the time goes", "",
        f"Same model and start (p_SFT), same prompt records in the same order, {trl['buffer']} rollouts per "
        f"iteration ({trl['prompts_per_iter']} prompts × {trl['group_size']} samples for grpo and TRL, "
        f"{gae['prompts_per_iter']} distinct prompts for gae), at most {trl['max_new_tokens']} new tokens at temperature 1, fp32, Adam lr 1e-5, "
        f"{trl['buffer'] // trl['mini_batch_size']} optimizer steps of {trl['mini_batch_size']} rollouts, one "
        "epoch, KL coefficient 0.2 to p_SFT, the coherent reward (srppo's `score()` and calibrated normaliser "
        "as TRL's reward function: both sides run each distinct prompt's p_SFT/p_PT forward once per group). TRL's gradient checkpointing and bf16 (on by default) are off. What differs "
        "by design: TRL has no critic (so srppo grpo is the like-for-like row; gae adds a critic forward and "
        "its updates), TRL runs p_SFT twice (reference for its KL term, and in the reward) where srppo runs it "
        "once for both, TRL puts the KL in the loss and srppo in the reward, srppo's engine prefills a prompt "
        "once per group where TRL's generate() prefills every row, and sampled responses differ in "
        "length, hence the rate in tokens/s.", "", *phases(res)]
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
        res = {
            "matmul": child(["bench/workloads.py", "matmul", *q], tmp / "matmul.json"),
            "sft": child(["bench/workloads.py", "sft", *q], tmp / "sft.json"),
            "rollout": child(["bench/workloads.py", "rollout", *q], tmp / "rollout.json"),
            "bf16": child(["bench/workloads.py", "bf16", *q], tmp / "bf16.json"),
            "ppo_gae": child(["bench/workloads.py", "ppo", "--estimator", "gae", *q], tmp / "ppo_gae.json"),
            "ppo_grpo": child(["bench/workloads.py", "ppo", "--estimator", "grpo", *q], tmp / "ppo_grpo.json"),
            # the same two PPO rows with the speed knobs off (ppo.logp_old: actor, ppo.group_by_length: false)
            "ppo_gae_knobs_off": child(["bench/workloads.py", "ppo", "--estimator", "gae", "--variant", "knobs-off",
                                        *q], tmp / "ppo_gae_knobs_off.json"),
            "ppo_grpo_knobs_off": child(["bench/workloads.py", "ppo", "--estimator", "grpo", "--variant",
                                         "knobs-off", *q], tmp / "ppo_grpo_knobs_off.json"),
            "ppo_gae_lora": child(["bench/workloads.py", "ppo", "--estimator", "gae", "--variant", "lora", *q],
                                  tmp / "ppo_gae_lora.json"),
            "ppo_gae_no_recompute": child(["bench/workloads.py", "ppo", "--estimator", "gae", "--variant",
                                           "no-recompute", *q], tmp / "ppo_gae_no_recompute.json"),
            "trl_grpo": child(["bench/trl_grpo.py", *q], tmp / "trl_grpo.json"),
            # again at the end: the rate the rows are held to is the better of the two (a busy moment
            # at the start would otherwise flatter every percentage)
            "matmul_end": child(["bench/workloads.py", "matmul", *q], tmp / "matmul_end.json"),
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
