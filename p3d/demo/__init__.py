"""`p3d demo`: the whole chain on one workflow, then the paper's ablations in miniature; the report
(p3d/report.py) is written from the run's result.

  run.py        the chain, step by step, and the result it returns
  steps.py      each step as the command a user types, run as a child process; jobs side by side
  ablations.py  the variants (grouping, budgets, rotary position ids, oracle backends) as workflows
  ask.py        the `p3d ask` step on a held-out scene, and its section of the report
  result.py     DemoResult: what the report reads
"""
