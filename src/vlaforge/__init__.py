"""vlaforge: Vision-Language-Action robot policies, from demonstrations to a safe deployed policy.

``import vlaforge`` stays fast: heavy parts (torch models, simulators) import where used.
"""

__version__ = "0.1.0"
