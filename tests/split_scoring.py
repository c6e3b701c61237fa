"""A buffer's experience (the frozen roles' scores, the actor's log-probs, the critic's values, advantages and
returns), computed by one process or, under torchrun, by each rank for its share of the rows and gathered.

    python tests/split_scoring.py TINY_PT TINY_SFT OUT.pt                          # one process
    python -m torch.distributed.run --nproc_per_node=2 tests/split_scoring.py TINY_PT TINY_SFT OUT.pt

tests/test_scale_out.py runs both and compares; rank 0 writes OUT.pt.
"""

import sys

import torch
import torch.distributed as dist

from srppo.config.params import PPOConfig
from srppo.data.batch import encode_prompt
from srppo.methods.ppo.experience import make_experience
from srppo.models.loading import load_causal_lm, load_tokenizer, load_value_model
from srppo.rollout.engine import Generation
from srppo.runtime import distributed
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import score

CPU = torch.device("cpu")
TOPICS = ["rain", "the sea at night", "maps", "tea", "a long walk in the snow", "cats", "wind"]


def experience(pt_dir: str, sft_dir: str) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(sft_dir)
    # 7 rows of different lengths: 2 ranks get 4 and 3 (+1 repeat) rows
    gens = [Generation(encode_prompt(tok, [{"role": "user", "content": f"Say something about {t}."}]),
                       [5 + (i * 7 + k) % 300 for k in range(3 + 2 * i)] + [tok.eos_token_id], False)
            for i, t in enumerate(TOPICS)]
    sft, pt = (load_causal_lm(d, CPU, torch.float32).eval() for d in (sft_dir, pt_dir))
    actor = load_causal_lm(sft_dir, CPU, torch.float32, trainable=True)
    critic = load_value_model(sft_dir, CPU, torch.float32)
    torch.manual_seed(0)
    torch.nn.init.normal_(critic.value_head.weight)  # a head that reads the hidden states (it starts at zero)
    rows_scored = []  # rows of every p_SFT forward in this process
    sft.register_forward_pre_hook(lambda m, args, kwargs: rows_scored.append(kwargs["input_ids"].shape[0]),
                                  with_kwargs=True)
    scored = score(gens, sft, pt, tok.pad_token_id, CPU, chunk=2)
    exp = make_experience(actor, critic, scored, RewardNormalizer(), PPOConfig(), chunk=2)
    return {"logp_sft": scored.logp_sft, "logp_pt": scored.logp_pt, "reward_raw": scored.reward_raw,
            "logp_old": exp.logp_old, "values": exp.values, "advantages": exp.advantages, "returns": exp.returns,
            "rows_scored_by_p_sft": torch.tensor(sum(rows_scored))}


if __name__ == "__main__":
    if distributed.world_size() > 1:
        dist.init_process_group("gloo")
    out = experience(sys.argv[1], sys.argv[2])
    if distributed.is_main():
        torch.save({**out, "world_size": distributed.world_size()}, sys.argv[3])
