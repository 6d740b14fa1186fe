"""Backends by name: each implements engine.backends.base.Backend."""

from __future__ import annotations

from typing import Callable

from engine.backends.base import Alignment, Backend, Generation
from engine.errors import BackendUnavailable
from engine.models import ModelSpec


def _ctranslate2(model: ModelSpec, **kw) -> Backend:
    from engine.backends.ctranslate2_backend import CTranslate2Backend

    return CTranslate2Backend(model, **kw)


def _coreml(model: ModelSpec, **kw) -> Backend:
    from engine.backends.coreml.backend import CoreMLBackend

    return CoreMLBackend(model, **kw)


REGISTRY: dict[str, Callable[..., Backend]] = {"ctranslate2": _ctranslate2, "coreml": _coreml}


def register(name: str, factory: Callable[..., Backend]) -> None:
    """Add a backend factory (used by the Core ML backend and by tests)."""
    REGISTRY[name] = factory


def backend_for(compute: str, platform: str | None = None) -> str:
    """The backend a worker kind runs on: Core ML for ane/gpu/all on macOS, CTranslate2 otherwise."""
    import sys

    platform = platform or sys.platform
    return "coreml" if platform == "darwin" and compute in ("ane", "gpu", "all") else "ctranslate2"


def check_compute(compute: str) -> str:
    """Refuse, before anything starts, a worker kind this machine cannot run; returns its backend."""
    name = backend_for(compute)
    if name == "ctranslate2":
        from engine.backends.ctranslate2_backend import resolve_device

        resolve_device(compute)
    else:
        try:
            import coremltools  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(compute, "needs coremltools: pip install 'scriptorium[coreml]'") from exc
    return name


def create_backend(name: str, model: ModelSpec, **kw) -> Backend:
    """Build the backend called `name` for `model`."""
    if name not in REGISTRY:
        raise BackendUnavailable(name, f"unknown backend (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name](model, **kw)


__all__ = ["Alignment", "Backend", "Generation", "REGISTRY", "backend_for", "check_compute", "create_backend", "register"]
