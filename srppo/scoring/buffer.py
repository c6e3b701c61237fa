"""Rollout buffers as parquet: one row per sampled response, browsable with pandas or DuckDB.

They carry everything PPO's critic warm-up needs (token ids, per-token log-probs under p_SFT and
p_PT, the coherent reward), so the warm-up never re-scores them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from srppo.data.batch import collate
from srppo.scoring.score import Scored

REQUIRED = ("prompt_ids", "response_ids", "truncated", "logp_sft", "logp_pt", "reward_raw")


def per_response(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """(B, T-1) tensor -> list of the values on each row's response positions."""
    return [values[i][mask[i] > 0].tolist() for i in range(values.shape[0])]


def scatter_rows(rows: list[list[float]], mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(mask, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i][mask[i] > 0] = torch.tensor(r, dtype=torch.float32)
    return out


def to_frame(scored: Scored, gens, items: list[dict], tok, buffer_index: int) -> pd.DataFrame:
    mask = scored.batch.action_mask.cpu()
    return pd.DataFrame({
        "buffer": buffer_index,
        "id": [it["id"] for it in items],
        "family": [it.get("family", "") for it in items],
        "prompt": [it["messages"][-1]["content"] for it in items],
        "response": [tok.decode(g.response_ids, skip_special_tokens=True) for g in gens],
        "length": [len(g.response_ids) for g in gens],
        "truncated": [g.truncated for g in gens],
        "reward_raw": scored.reward_raw.cpu().tolist(),
        "prompt_ids": [g.prompt_ids for g in gens],
        "response_ids": [g.response_ids for g in gens],
        "logp_sft": per_response(scored.logp_sft.cpu(), mask),
        "logp_pt": per_response(scored.logp_pt.cpu(), mask),
    })


def from_frame(df: pd.DataFrame, pad_id: int, device, source: str = "buffer") -> Scored:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: rollout buffer lacks column(s) {missing}")
    prompts = [list(map(int, p)) for p in df["prompt_ids"]]
    responses = [list(map(int, r)) for r in df["response_ids"]]
    batch = collate(prompts, responses, pad_id)
    logp_sft = scatter_rows([list(x) for x in df["logp_sft"]], batch.action_mask)
    logp_pt = scatter_rows([list(x) for x in df["logp_pt"]], batch.action_mask)
    reward = torch.tensor(df["reward_raw"].to_numpy(), dtype=torch.float32)
    truncated = torch.tensor(df["truncated"].to_numpy(), dtype=torch.bool)
    return Scored(batch.to(device), logp_sft.to(device), logp_pt.to(device), reward.to(device), truncated.to(device))


def buffer_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"buffer_{index:03d}.parquet"


def read_buffers(directory: Path, n: int, pad_id: int, device) -> list[Scored]:
    out = []
    for i in range(n):
        path = buffer_path(directory, i)
        if not path.exists():
            raise FileNotFoundError(f"{path}: rollout buffer {i} missing (rollouts.n_buffers too small?)")
        out.append(from_frame(pd.read_parquet(path), pad_id, device, str(path)))
    return out
