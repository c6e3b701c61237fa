"""The training methods: SFT (sft.py), SRPPO and RM-PPO (ppo/), SPIN (spin.py, with the shared pairwise
loop in pairwise.py), the RM-PPO baseline's reward-model training (reward_model.py), and the coherent
reward as a data filter (datafilter.py).

May import: `srppo.scoring` and below; methods do not import the evaluation.
"""
