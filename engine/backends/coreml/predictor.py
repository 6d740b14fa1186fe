"""The one seam between the host loop and a model runtime: `predict(inputs) -> outputs`.

`CoreMLPredictor` runs a WhisperKit package through Apple's runtime (macOS only);
`NumpyPredictor` runs the numpy reference. Inputs and outputs are dicts of numpy arrays named
as in `contract`; the leading axis is the batch. Core ML packages are built for a batch of one,
so `CoreMLPredictor` runs one call per row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.backends.coreml.contract import DECODER, ENCODER, MEL, STAGES
from engine.errors import BackendUnavailable, ModelError

# Worker kind -> coremltools.ComputeUnit name.
COMPUTE_UNITS = {"ane": "CPU_AND_NE", "gpu": "CPU_AND_GPU", "all": "ALL", "cpu": "CPU_ONLY"}
# "auto" is WhisperKit's default split: mel on the GPU, encoder and decoder on the Neural Engine.
AUTO_UNITS = {MEL: "CPU_AND_GPU", ENCODER: "CPU_AND_NE", DECODER: "CPU_AND_NE"}


@runtime_checkable
class Predictor(Protocol):
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def compute_units(compute: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """ComputeUnit name per stage for a worker kind, with per-stage overrides (kind or unit name)."""
    if compute != "auto" and compute not in COMPUTE_UNITS:
        raise BackendUnavailable(compute, f"unknown compute kind (one of auto, {', '.join(COMPUTE_UNITS)})")
    units = dict(AUTO_UNITS) if compute == "auto" else {stage: COMPUTE_UNITS[compute] for stage in STAGES}
    for stage, unit in (overrides or {}).items():
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        unit = COMPUTE_UNITS.get(unit, unit)
        if unit not in COMPUTE_UNITS.values():
            raise ValueError(f"unknown compute unit {unit!r} for {stage}")
        units[stage] = unit
    return units


def on_macos() -> bool:
    return sys.platform == "darwin"


class NumpyPredictor:
    """A numpy reference model (see `reference`) behind the predictor interface."""

    def __init__(self, model):
        self.model = model

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.predict(inputs)


class CoreMLPredictor:
    """One Core ML model (.mlmodelc or .mlpackage) on the given compute units."""

    def __init__(self, path: str | Path, units: str = "ALL"):
        if not on_macos():
            raise BackendUnavailable("coreml", f"Core ML models run only on macOS (this is {sys.platform})")
        try:
            import coremltools as ct
        except ImportError as exc:
            raise BackendUnavailable("coreml", "coremltools is not installed (pip install 'scriptorium[coreml]')") \
                from exc
        self.path, self.units = Path(path), units
        unit = ct.ComputeUnit[units]
        try:
            if self.path.suffix == ".mlmodelc":
                self.model = ct.models.CompiledMLModel(str(self.path), compute_units=unit)
            else:
                self.model = ct.models.MLModel(str(self.path), compute_units=unit)
        except Exception as exc:  # noqa: BLE001 - coremltools raises bare Exceptions
            raise ModelError(str(self.path), f"Core ML cannot load it on {units}: {exc}") from exc

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = {len(v) for v in inputs.values() if v.ndim >= 1}
        batch = max(rows) if rows else 1
        if batch == 1 or any(v.ndim == 0 or len(v) != batch for v in inputs.values()):
            return self._one(inputs)
        outs = [self._one({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(batch)]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _one(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        return {k: np.asarray(v) for k, v in self.model.predict(feed).items()}
