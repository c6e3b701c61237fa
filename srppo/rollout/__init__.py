"""Sampling: the engines (engine.py: the transformers engine and the registry; vllm_engine.py) and the
configured engine, its sampling settings and the prompts it samples from (sampling.py).

May import: `srppo.models` and below.
"""
