"""Simulators, one module per simulator.

- :mod:`vlaforge.sim.metaworld`: ``MetaWorldEnv`` (Gymnasium, DESIGN frame dicts), scripted
  experts, derived tasks. Imports gymnasium; MuJoCo and Meta-World load when an env is built.
- :mod:`vlaforge.sim.instructions`: the task catalogue (names, ``TASK_SETS``, ``resolve_tasks``,
  ``instructions``), pure Python.

This file imports nothing heavy: ``import vlaforge.sim`` stays fast.
"""
