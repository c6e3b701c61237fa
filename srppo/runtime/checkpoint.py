"""Resumable training: periodic checkpoints that survive a killed stage.

A checkpoint holds everything a loop needs to continue as if it had never stopped: module weights
(safetensors), optimizer states, RNG states (python, numpy, torch) and a small loop state (data
position, history so far). Under DeepSpeed ZeRO the weights and optimizer states are sharded across
ranks: each engine writes its own checkpoint (every rank its shards) and every rank its RNG states;
resuming needs the same number of processes. It lives *outside* the stage's DVC outputs, because DVC deletes declared
outputs before it runs a stage. A checkpoint is only used when its fingerprint (the params sections
the stage reads + its input files) matches the current run; otherwise it is ignored with a reason.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from srppo.io import atomic_dir, read_json, write_json
from srppo.runtime import distributed
from srppo.runtime.stage import beside_output

PLACEMENT = ("node_rank", "rendezvous")  # runtime keys that place a node, not what it computes
FULL_HASH_LIMIT = 64 << 20  # files above this are fingerprinted by size + first/last MiB: stays cheap at 7B


def _file_digest(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            h.update(f.read())
            return
        h.update(f.read(1 << 20))
        f.seek(size - (1 << 20))
        h.update(f.read())


def fingerprint(sections: dict, inputs: list[str | Path]) -> str:
    """sha256 over the params sections a stage reads and the contents of its input files/directories."""
    h = hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode())
    for root in map(Path, inputs):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            _file_digest(f, h)
    return h.hexdigest()[:16]


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # sampling on GPU draws from these
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _as_tuples(x):
    # random.setstate insists on tuples; a round trip may hand back lists
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def optimizer_steps(optimizer) -> int:
    """The most optimizer steps any parameter's state records (Adam's `step`): 0 for a fresh optimizer. A ZeRO
    optimizer wraps the torch one that holds the states (its flat partitions)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    steps = [float(st["step"]) for st in getattr(inner, "state", {}).values() if isinstance(st, dict) and "step" in st]
    return int(max(steps, default=0))


class Checkpointer:
    """Save every `every` steps into `directory/latest`, restore on start, delete on success.

    `every = 0` turns checkpointing off (restore then finds nothing either). `min_seconds`: a due step is
    skipped when the last save (or the checkpointer's creation) is more recent than that. A save writes the
    weights and optimizer states (3 GB for PPO's actor and critic on the 135M model, 2-9 s on a laptop
    disk), so runs whose steps take seconds would otherwise spend a good part of their time saving; runs
    whose steps take minutes save at every due step.
    """

    def __init__(self, directory: str | Path, fp: str, every: int, log: Callable[[str], None] = print,
                 min_seconds: float = 0.0):
        self.dir, self.fp, self.every, self.log = Path(directory), fp, every, log
        self.min_seconds = min_seconds
        self.latest = self.dir / "latest"
        self.last_save = time.monotonic()

    def restore(self, modules: dict[str, torch.nn.Module], optimizers: dict, engines: dict | None = None) -> dict | None:
        """Load weights, optimizer and RNG states in place; return the loop state, or None to start fresh.

        `engines`: DeepSpeed engines by name (a module and its optimizer of the same name), restored from their
        own sharded checkpoints on every rank; every rank calls restore then, and gets its own RNG states."""
        engines = {k: v for k, v in (engines or {}).items() if v is not None}
        if not self.every or not (self.latest / "meta.json").exists():
            return None
        meta = read_json(self.latest / "meta.json")
        if meta.get("fingerprint") != self.fp:
            self.log(f"ignoring checkpoint {self.latest}: it was made with other params or inputs "
                     f"(fingerprint {meta.get('fingerprint')} != {self.fp})")
            return None
        if meta.get("world_size", 1) != distributed.world_size() or bool(meta.get("sharded")) != bool(engines):
            raise RuntimeError(f"{self.latest}: made by {meta.get('world_size', 1)} process(es)"
                               f"{' under DeepSpeed' if meta.get('sharded') else ''}; this run has "
                               f"{distributed.world_size()}{' under DeepSpeed' if engines else ''}. Resume with the "
                               f"same runtime.num_processes and deepspeed_config, or delete {self.dir} to start over")
        try:
            # weights_only: a checkpoint is data, never code
            state = torch.load(self.latest / "state.pt", weights_only=True)
            for name, engine in engines.items():  # weights and optimizer shards: every rank loads its own
                path, _ = engine.load_checkpoint(str(self.latest), tag=name, load_lr_scheduler_states=False)
                if path is None:
                    raise FileNotFoundError(f"DeepSpeed found no checkpoint '{name}' in it")
            for name, module in modules.items():
                if name not in engines:
                    load_model(module, str(self.latest / f"{name}.safetensors"))
            for name, opt in optimizers.items():
                if name not in engines:
                    opt.load_state_dict(state["optimizers"][name])
            rng = torch.load(self.latest / f"rng_{distributed.rank()}.pt", weights_only=True) if engines \
                else state["rng"]
        except Exception as err:  # weights may be half-loaded by now: starting fresh silently would be wrong
            raise RuntimeError(f"{self.latest}: unreadable checkpoint ({err}); delete {self.dir} to start "
                               f"the stage over") from err
        set_rng_state(rng)
        steps = {name: optimizer_steps(engines[name].optimizer if name in engines else opt)
                 for name, opt in optimizers.items()}
        self.log(f"resuming from checkpoint {self.latest} at step {meta['step']} (optimizer steps restored: "
                 + ", ".join(f"{k} {v}" for k, v in steps.items()) + ")")
        return state["loop"]

    def due(self, step: int) -> bool:
        """Whether to save after `step`: on the step grid, and `min_seconds` after the last save. Every rank
        takes rank 0's clock, so all agree (the step grid alone is the same on every rank)."""
        if not self.every or step % self.every:
            return False
        if not self.min_seconds:
            return True
        waited = time.monotonic() - self.last_save
        return distributed.all_sum(waited if distributed.is_main() else 0.0) >= self.min_seconds

    def maybe_save(self, step: int, modules: dict, optimizers: dict, loop: Callable[[], dict],
                   engines: dict | None = None) -> None:
        if self.due(step):
            self.save(step, modules, optimizers, loop(), engines)

    def save(self, step: int, modules: dict, optimizers: dict, loop: dict, engines: dict | None = None) -> None:
        """`engines`: as in `restore`; then every rank calls save and writes its shards."""
        engines = {k: v for k, v in (engines or {}).items() if v is not None}
        if engines:
            self._save_sharded(step, modules, optimizers, loop, engines)
        else:  # atomic: a kill mid-save leaves the previous checkpoint, never a half-written one
            with atomic_dir(self.latest) as tmp:
                self._write(tmp, step, modules, optimizers, loop, {"rng": rng_state()})
        self.last_save = time.monotonic()
        self.log(f"checkpoint at step {step} -> {self.latest}")

    def _write(self, tmp: Path, step: int, modules: dict, optimizers: dict, loop: dict, extra: dict,
               meta: dict | None = None) -> None:
        for name, module in modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"))  # handles tied weights
        torch.save({"optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "loop": loop, **extra},
                   tmp / "state.pt")
        write_json(tmp / "meta.json", {"fingerprint": self.fp, "step": step, **(meta or {})})

    def _save_sharded(self, step: int, modules: dict, optimizers: dict, loop: dict, engines: dict) -> None:
        """DeepSpeed's own checkpoint of each engine (every rank writes its shards of the weights and optimizer
        states) and each rank's RNG states into `incoming/`; rank 0 adds the loop state and swaps it in for
        `latest` once all ranks are done, so a kill mid-save leaves the previous checkpoint. Multi-node: the
        checkpoint directory must be on a file system every node sees."""
        incoming = self.dir / "incoming"
        if distributed.is_main():
            shutil.rmtree(incoming, ignore_errors=True)
            incoming.mkdir(parents=True)
        distributed.barrier()
        for name, engine in engines.items():
            engine.save_checkpoint(str(incoming), tag=name, save_latest=False)
        torch.save(rng_state(), incoming / f"rng_{distributed.rank()}.pt")
        distributed.barrier()
        if distributed.is_main():
            rest = lambda d: {k: v for k, v in d.items() if k not in engines}
            self._write(incoming, step, rest(modules), rest(optimizers), loop, {},
                        {"sharded": True, "world_size": distributed.world_size()})
            previous = self.dir / "previous"
            shutil.rmtree(previous, ignore_errors=True)
            if self.latest.exists():
                self.latest.rename(previous)
            incoming.rename(self.latest)
            shutil.rmtree(previous, ignore_errors=True)
        distributed.barrier()

    def clear(self) -> None:
        """The stage finished: its outputs supersede the checkpoint."""
        shutil.rmtree(self.dir, ignore_errors=True)


def stage_checkpointer(out_dir: str | Path, params, sections: list[str], inputs: list, every: int,
                       log: Callable[[str], None], min_seconds: float = 0.0) -> Checkpointer:
    """A checkpointer in `data/checkpoints/<stage>` for the output `data/<stage>`: derived from the declared
    output (srppo.runtime.stage.beside_output), next to it but not part of it.

    `checkpoint_every` and `checkpoint_min_seconds` are left out of the fingerprint: they change when
    checkpoints are made, not what; so are `runtime.node_rank` and `rendezvous`, which differ between the nodes
    of one run (and the rendezvous host between a run and its restart).
    """
    dump = params.model_dump(mode="json")
    chosen = {}
    for s in sections:
        section, _, key = s.partition(".")
        chosen[s] = dump[section][key] if key else dump[section]
        if isinstance(chosen[s], dict):  # when to save, and where this node sits, change no result
            chosen[s] = {k: v for k, v in chosen[s].items() if not k.startswith("checkpoint_") and k not in PLACEMENT}
    return Checkpointer(beside_output(out_dir, "checkpoints"), fingerprint(chosen, inputs), every, log, min_seconds)
