"""PPO with the coherent reward (SRPPO) or a reward model (RM-PPO): a whole run (run.py, `run_ppo`), one
iteration and one critic warm-up buffer (trainer.py), the advantage estimators (estimators.py), the losses
(losses.py), experience making (experience.py) and the four roles (roles.py).

May import: `srppo.scoring` and below.
"""
