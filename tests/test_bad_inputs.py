"""The bad-input catalogue entries not covered by test_loaders/test_config/test_base/test_prepare
(docs/bad-inputs.md lists them all): each one stops early with an error naming the culprit."""

import errno
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from srppo.config.params import PPOConfig
from srppo.data.batch import encode_prompt
from srppo.data.records import DataError, read_jsonl, write_jsonl
from srppo.io import atomic_dir, write_json
from srppo.methods.ppo.run import prompt_stream
from srppo.methods.ppo.trainer import NumericError, PPOTrainer, Roles
from srppo.models.loading import (
    ModelError,
    check_tokenizer,
    context_length,
    load_causal_lm,
    load_tokenizer,
    load_value_model,
)
from srppo.rollout.engine import Generation, SamplingParams, make_engine
from srppo.rollout.sampling import prompt_ids
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import score

CPU = torch.device("cpu")
MSG = [{"role": "user", "content": "Describe rain in one sentence."}]


def test_missing_jsonl_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_prompt_longer_than_the_context_is_caught_before_generation(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    records = [{"id": "short", "messages": MSG}, {"id": "long", "messages": [
        {"role": "user", "content": "rain " * 300}]}]
    assert context_length(tiny_dir) == 256
    with pytest.raises(DataError, match=r"ppo_prompts\.jsonl row 2: prompt \(id long\) is \d+ tokens; "
                                        r"with max_new_tokens=16 it exceeds the model's context of 256"):
        prompt_ids(tok, records, "ppo_prompts.jsonl", 16, context_length(tiny_dir))


def test_sft_max_len_over_the_context_is_a_config_error(tiny_dir):
    from srppo.methods.sft import check_max_len

    check_max_len(256, context_length(tiny_dir), tiny_dir)
    with pytest.raises(ValueError, match=rf"sft.max_len=512 exceeds the context of {tiny_dir} \(256 tokens"):
        check_max_len(512, context_length(tiny_dir), tiny_dir)


def test_too_few_ppo_prompts_is_an_error_not_a_hang():
    # before: a prompt set smaller than one buffer made the stream loop forever without yielding
    with pytest.raises(DataError, match=r"2 prompt\(s\), fewer than rollouts.buffer_size=4"):
        prompt_stream([[1], [2]], batch=4, seed=0)  # at the call, before any PPO work
    with pytest.raises(DataError, match="0 prompt"):
        prompt_stream([], batch=1, seed=0)


def test_prompt_stream_resumes_at_a_position():
    prompts = [[i] for i in range(5)]
    full = prompt_stream(prompts, 2, seed=3)
    want = [next(full) for _ in range(7)]
    resumed = prompt_stream(prompts, 2, seed=3, start=4)
    assert [next(resumed) for _ in range(3)] == want[4:]


def test_tokenizer_without_eos_is_rejected():
    with pytest.raises(ModelError, match="some/dir: tokenizer has no EOS token"):
        check_tokenizer(SimpleNamespace(chat_template="{{ x }}", eos_token_id=None), "some/dir")


def test_truncated_safetensors_names_the_file(tmp_path, tiny_dir):
    model_dir = shutil.copytree(tiny_dir, tmp_path / "m")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=rf"{weights}: corrupt or truncated safetensors file"):
        load_causal_lm(model_dir, CPU, torch.float32)


def test_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path, tiny_dir, monkeypatch):
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    shutil.copy(tiny_dir / "config.json", model_dir)
    torch.save({"w": torch.zeros(1)}, model_dir / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was opened"))
    with pytest.raises(ModelError, match="no \\*.safetensors weights .*never pickles"):
        load_causal_lm(model_dir, CPU, torch.float32)


def test_nan_reward_stops_ppo_with_a_dump_of_the_batch(tmp_path, tiny_dir, tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    sft = load_causal_lm(tiny_sft_dir, CPU, torch.float32).eval()
    roles = Roles(actor=load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True),
                  critic=load_value_model(tiny_sft_dir, CPU, torch.float32), sft=sft,
                  pt=load_causal_lm(tiny_dir, CPU, torch.float32).eval())
    trainer = PPOTrainer(roles, make_engine("hf", roles.actor, tok, 2), tok, PPOConfig(mini_batch_size=2),
                         SamplingParams(max_new_tokens=4), RewardNormalizer(), dump_dir=tmp_path / "debug")
    p = encode_prompt(tok, MSG)
    scored = score([Generation(p, [5, 6, tok.eos_token_id], False)] * 2, roles.sft, roles.pt,
                   tok.pad_token_id, CPU)
    scored.reward_raw[1] = math.nan  # e.g. a log-prob underflow in p_PT
    with pytest.raises(NumericError, match=r"non-finite reward \(\[.*nan\].*batch dumped to .*nonfinite_batch\.pt"):
        trainer.warmup_critic(scored)
    dump = torch.load(tmp_path / "debug" / "nonfinite_batch.pt", weights_only=True)
    assert math.isnan(dump["reward_raw"][1]) and dump["input_ids"].shape[0] == 2


def test_disk_full_while_saving_keeps_the_previous_output(tmp_path):
    out = tmp_path / "sft"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous")
    with pytest.raises(OSError) as err:
        with atomic_dir(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises mid-write
    assert err.value.errno == errno.ENOSPC
    assert f"writing {out} failed: No space left on device" in str(err.value)
    assert (out / "model.safetensors").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["sft"]  # no temp directory left behind


def full_disk(fd):
    """`os.fsync` on a full disk: ext4/XFS allocate lazily, so that is often where ENOSPC shows."""
    raise OSError(errno.ENOSPC, "No space left on device")


FILE_WRITERS = {
    "write_json": lambda path: write_json(path, {"new": 1}),
    "write_jsonl": lambda path: write_jsonl(path, [{"id": "r1"}, {"id": "r2"}]),
}


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_disk_full_while_writing_a_file_names_the_target(tmp_path, monkeypatch, writer):
    target = tmp_path / "metrics.json"
    target.write_text("previous\n")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as err:
        FILE_WRITERS[writer](target)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == (f"[Errno 28] writing {target} failed: No space left on device; nothing was "
                              f"written to {target}: it is as this run found it (absent if it was absent)")
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temp file is gone


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_written_files_get_the_mode_open_would_give(tmp_path, writer):
    FILE_WRITERS[writer](tmp_path / "out")  # not mkstemp's 0600: other users of a shared cache can read them
    (tmp_path / "plain").write_text("")
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_disk_full_in_a_file_of_an_output_dir_names_the_dir_once(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as err:
        with atomic_dir(tmp_path / "latest") as tmp:
            write_json(tmp / "meta.json", {"step": 3})
    assert str(err.value) == (f"[Errno 28] writing {tmp_path / 'latest'} failed: No space left on device; "
                              f"nothing was written to {tmp_path / 'latest'}: it is as this run found it (absent "
                              "if it was absent)")
    assert list(tmp_path.iterdir()) == []


def test_a_real_failed_write_mid_file_names_the_target(tmp_path):
    # The kernel refuses to grow a file past RLIMIT_FSIZE (EFBIG) the way it refuses a full disk
    # (ENOSPC): mid-file, after the first blocks were written. A child process takes the limit.
    target = tmp_path / "demos.jsonl"
    target.write_text('{"id": "previous"}\n')
    code = f"""
import resource, signal
from srppo.data.records import write_jsonl
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process dies instead of seeing the error
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
try:
    write_jsonl({str(target)!r}, ({{"id": f"r{{i}}", "text": "x" * 100}} for i in range(10_000)))
except OSError as err:
    print(err.errno, err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{errno.EFBIG} "), out
    assert f"writing {target} failed: File too large; nothing was written to {target}" in out
    assert ".tmp" not in out
    assert target.read_text() == '{"id": "previous"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["demos.jsonl"]


def test_a_full_disk_under_safetensors_names_the_output_dir(tmp_path, tiny_dir):
    # safetensors' writer reports a failed write as SafetensorError("... IoError(Os { code: 27 ...") naming no
    # file; the output directory it was saving into is named instead. A child process takes the file size
    # limit, which the kernel enforces mid-file exactly as it does a full disk.
    out = tmp_path / "sft"
    code = f"""
import resource, signal
import torch
from safetensors.torch import save_model
from srppo.io import atomic_dir
from srppo.models.loading import load_causal_lm
model = load_causal_lm({str(tiny_dir)!r}, torch.device("cpu"), torch.float32)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 12, 1 << 12))
try:
    with atomic_dir({str(out)!r}) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # as the checkpoints and save_pretrained write
except OSError as err:
    print(err.errno, err)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.startswith(f"{errno.EFBIG} [Errno {errno.EFBIG}] writing {out} failed: File too large; "
                                 "nothing was written"), (
        res.stdout + res.stderr[-2000:])
    assert list(tmp_path.iterdir()) == []  # no temp directory left behind


def test_output_dirs_are_readable_by_the_group(tmp_path):
    # mkdtemp makes 0700 directories: a shared cache's other users could not read an output made from one
    with atomic_dir(tmp_path / "sft") as tmp:
        (tmp / "done").write_text("1")
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "sft").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_atomic_dir_sweeps_temp_dirs_of_killed_writers(tmp_path):
    (tmp_path / ".sft.abc123.tmp").mkdir()  # what a SIGKILL during a save leaves
    with atomic_dir(tmp_path / "sft") as tmp:
        (tmp / "done").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]


def test_nan_sft_loss_names_the_micro_batch_and_rows(tiny_dir):
    from srppo.config.params import SFTConfig
    from srppo.methods.sft import encode_demos, train_sft

    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)
    with torch.no_grad():
        model.get_input_embeddings().weight[:] = math.inf  # what a diverged run looks like
    demos = [{"id": f"d{i}", "messages": MSG, "response": "Rain falls."} for i in range(2)]
    with pytest.raises(FloatingPointError, match=r"SFT loss is nan at micro-batch 0 \(demo rows \[\d, \d\]\)"):
        train_sft(model, tok, encode_demos(tok, demos, 128), SFTConfig(batch_size=2), seed=0)


def test_zero_eval_prompts_after_filtering(tmp_path):
    from srppo.config.params import PrepareConfig
    from srppo.data.prepare import prepare

    rows = [f'{{"prompt": "p{i}", "response": "r{i}"}}\n' for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(rows))
    cfg = PrepareConfig(source="files", n_calibration=2, demos={"path": str(tmp_path / "d.jsonl")},
                        prompts={"path": str(tmp_path / "d.jsonl"), "format": "prompt"})
    with pytest.raises(ValueError, match="prepare: the eval split is empty after filtering"):
        prepare(cfg)
