"""Self-Rewarding PPO (arXiv 2510.21090): SFT, coherent reward, PPO — as a library.

Layers, each importing only the ones below it (checked by import-linter, tests/test_layers.py):

    evaluation   checkers, lm-eval, judge, comparison tables, plots
    methods      sft, ppo, spin, reward-model training, data filter
    scoring      coherent reward, frozen forwards, reward-model scorer, calibration, rollout buffers
    rollout      sampling engines and what they sample from
    models       loading, LoRA, log-probs
    data         records, loaders, overlap setups, batches
    testbed      the verifiable instruction testbed (pure standard library)
    runtime      params loading, checkpoints, processes
    config       params.yaml's typed models, presets
    io           atomic files

Kept import-light on purpose: submodules pull torch/transformers only when used. Nothing here knows
about DVC or Prefect: stages/ and flows/ do.
"""

__version__ = "0.1.0"

import os as _os

# (this process, the one that started it), read at the first import of the package: a stage imports srppo
# within its first second, long before `srppo.runtime.stage.die_with_parent` runs (after torch's imports,
# seconds later). Had `dvc repro` been killed in between, the stage would by then belong to init and would run
# on. The pid tells a process forked after the import (whose parent is its forker) from the one that read it.
LAUNCHED = (_os.getpid(), _os.getppid())
