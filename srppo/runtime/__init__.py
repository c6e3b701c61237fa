"""What every stage runs on: loading params and timing phases (stage.py), resumable checkpoints
(checkpoint.py), and processes, ZeRO and the optimizer (distributed.py).

May import: `srppo.config`, `srppo.io`.
"""
