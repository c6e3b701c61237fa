"""Self-Rewarding PPO (arXiv 2510.21090): SFT, coherent reward, PPO — as a library.

Kept import-light on purpose: submodules pull torch/transformers only when used.
"""

__version__ = "0.1.0"
