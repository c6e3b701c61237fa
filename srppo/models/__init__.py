"""Models: loading, saving and materialising them (loading.py), LoRA adapters and the shared-base views
(lora.py), and per-token log-probs (logprobs.py).

May import: `srppo.data` and below.
"""
