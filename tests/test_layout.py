"""The engine is a library: it must never import the runner."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"


def test_engine_never_imports_runner():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n == "runner" or n.startswith("runner.")]
    assert not offenders, offenders


def test_worker_kinds_pick_their_backend():
    """ane/gpu/all run on Core ML on a Mac; everything runs on CTranslate2 elsewhere (no Mac here: platform given)."""
    from engine.backends import backend_for

    assert [backend_for(k, "darwin") for k in ("ane", "gpu", "all", "cpu")] == ["coreml"] * 3 + ["ctranslate2"]
    assert {backend_for(k, "linux") for k in ("ane", "gpu", "all", "cpu")} == {"ctranslate2"}
