"""Records in, batches out: JSONL records and their validation (records.py), loaders for the public
formats (loaders.py), the overlap setups of §4.1 (prepare.py), chat encoding and padded batches (batch.py).

May import: `srppo.testbed`, `srppo.runtime`, `srppo.config`, `srppo.io`.
"""
