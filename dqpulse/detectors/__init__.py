"""Anomaly detectors: River's protocol, a registry, and the built-in detectors.

Importing this package registers ``adaptive``, ``seasonal``, ``robust``, ``hst``, the static rules
(``threshold``, ``freshness_sla``, ``schema_contract``, ``validity``) and, when PyTorch is
installed, ``autoencoder`` (imported on first use).
"""

from __future__ import annotations

import importlib.util

from dqpulse.detectors import adaptive, hst, robust, rules, seasonal
from dqpulse.detectors.base import (
    DEFAULT_THRESHOLD,
    Detector,
    DetectorStateError,
    available,
    create,
    get,
    load_entry_points,
    register,
    register_lazy,
)


def _load_autoencoder() -> type[Detector]:
    from dqpulse.detectors.autoencoder import AutoencoderDetector

    return AutoencoderDetector


# torch is optional (extra "ml"): without it the autoencoder is simply not registered.
TORCH_AVAILABLE = importlib.util.find_spec("torch") is not None
if TORCH_AVAILABLE:
    register_lazy("autoencoder", _load_autoencoder)

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "DetectorStateError",
    "TORCH_AVAILABLE",
    "adaptive",
    "hst",
    "robust",
    "available",
    "create",
    "get",
    "load_entry_points",
    "register",
    "rules",
    "seasonal",
]
