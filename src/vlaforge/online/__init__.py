"""Model-aware online parts: confidence, feature density, online adaptation.

Unlike the robot side (``vlaforge.runtime``: numpy only, ``policy.predict_chunk``), these read the model:
``ConfidenceEstimator`` scores an observation from ``policy.heads`` and the pre-fusion features
(``confidence.py``; the feature density in ``density.py``; the saved calibration in ``confidence_file.py``),
``OnlineAdapter`` fine-tunes the policy on human corrections with the training engine's optimizer, clipping
and stage selection (``adaptation.py``). Both plug into the runtime's ``Controller`` hooks. Names are imported
lazily so ``import vlaforge.online`` stays light.
"""

from __future__ import annotations

from vlaforge.names import lazy_exports

_EXPORTS = {
    "ConfidenceEstimator": "confidence", "Confidence": "confidence", "ConfidenceNotSupported": "confidence",
    "FeatureDensity": "density",
    "OnlineAdapter": "adaptation", "AdaptResult": "adaptation",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
