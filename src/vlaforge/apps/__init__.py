"""Applications: programs that compose a simulator with the library layers below.

- :mod:`vlaforge.apps.collect`: scripted-expert demonstrations into a dataset (``vlaforge collect``);
- :mod:`vlaforge.apps.deploy_sim`: the deployment runtime driving a simulator (``vlaforge deploy-sim``);
- :mod:`vlaforge.apps.demo`: collect, train and evaluate end to end (``vlaforge demo``, ``make demo``).

Nothing in the library (data, runtime, training, evaluation, ...) imports from here; see the layer
order in docs/DESIGN.md (checked by tests/test_layers.py). This file imports nothing.
"""
