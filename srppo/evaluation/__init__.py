"""Evaluation: the testbed's exact checkers on greedy answers (testbed_eval.py), lm-evaluation-harness
benchmarks (lmeval.py), the AlpacaEval-style judge (judge.py), the comparison tables (compare.py), plots
(plots.py); the `eval` stage's run over the named models (run.py).

Top of the library: may import every layer below it.
"""
