"""PPO with the coherent reward (SRPPO) or a reward model (RM-PPO): the advantage estimators
(estimators.py), the losses (losses.py), experience making (experience.py), the trainer's update
(trainer.py) and the four roles (roles.py).

May import: `srppo.scoring` and below.
"""
