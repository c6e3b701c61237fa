"""Project tools that are neither the library nor orchestration: the DVC pipeline generator
(dvc_pipelines.py) and the DVC store check (storecheck.py)."""
