"""Scale-out on CPU (gloo): a buffer's scoring split across ranks gives a single process's experience; a multi-node
launch meets at node 0's rendezvous, and its settings are checked before any work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _run(args: list[str], out: Path, processes: int = 1) -> dict:
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                        "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([*launcher, str(HERE / "split_scoring.py"), *args, str(out)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out)


def test_two_ranks_score_half_a_buffer_each_and_gather_the_single_process_experience(tiny_dir, tiny_sft_dir, tmp_path):
    single = _run([str(tiny_dir), str(tiny_sft_dir)], tmp_path / "single.pt")
    split = _run([str(tiny_dir), str(tiny_sft_dir)], tmp_path / "split.pt", processes=2)
    assert (single["world_size"], split["world_size"]) == (1, 2)
    for key in ("logp_sft", "logp_pt", "reward_raw", "logp_old", "values", "advantages", "returns"):
        assert split[key].shape == single[key].shape, key
        assert torch.allclose(split[key], single[key], atol=1e-5), (key, (split[key] - single[key]).abs().max())
    assert single["values"].abs().sum() > 0
    # rank 0 ran p_SFT on its share (4 of the 7 rows, ceil(7 / 2)), not on the whole buffer
    assert int(single["rows_scored_by_p_sft"]) == 7 and int(split["rows_scored_by_p_sft"]) == 4


def test_a_multi_node_launch_meets_at_node_0s_rendezvous(monkeypatch):
    from srppo.config.params import RuntimeConfig
    from srppo.runtime.distributed import launch_command

    zero2 = "configs/deepspeed/zero2.json"
    rt = RuntimeConfig(num_processes=8, nnodes=4, rendezvous="node0.cluster:29500", deepspeed_config=zero2)
    assert rt.world_size == 32
    monkeypatch.setenv("NODE_RANK", "3")  # as a scheduler sets it on the fourth node
    cmd = launch_command(rt, "stages/ppo.py", ["a", "b"])
    assert cmd[cmd.index("-m") + 1:] == ["torch.distributed.run", "--nproc_per_node=8", "--nnodes=4", "--node_rank=3",
                                         "--master_addr=node0.cluster", "--master_port=29500", "stages/ppo.py", "a", "b"]
    pinned = RuntimeConfig(num_processes=8, nnodes=4, node_rank=1, rendezvous="node0.cluster:29500", deepspeed_config=zero2)
    assert "--node_rank=1" in launch_command(pinned, "s.py", [])


@pytest.mark.parametrize("runtime, message", [
    ({"nnodes": 2, "deepspeed_config": "configs/deepspeed/zero2.json"}, "rendezvous: host:port of node 0"),
    ({"nnodes": 2, "rendezvous": "node0", "deepspeed_config": "configs/deepspeed/zero2.json"}, "host:port"),
    ({"nnodes": 2, "rendezvous": "n:1", "launcher": "deepspeed", "deepspeed_config": "configs/deepspeed/zero2.json"},
     "hostfile"),
    ({"nnodes": 2, "rendezvous": "n:1"}, "needs runtime.deepspeed_config"),
    ({"nnodes": 2, "node_rank": 2, "rendezvous": "n:1", "deepspeed_config": "configs/deepspeed/zero2.json"},
     "node_rank=2 must be below"),
])
def test_multi_node_settings_are_checked_before_any_work(runtime, message):
    from pydantic import ValidationError

    from srppo.config.params import RuntimeConfig

    with pytest.raises(ValidationError, match=message):
        RuntimeConfig(**runtime)
