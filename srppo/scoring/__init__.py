"""Scoring samples: the coherent reward and its normaliser (rewards.py), the frozen forwards that give
p_SFT's log-probs and the reward (score.py), a preference reward model as a scorer (reward_model.py),
reward calibration (calibrate.py), the scored rollout buffers (buffer.py) and p_SFT's buffers before PPO
(rollouts.py).

May import: `srppo.rollout` and below.
"""
