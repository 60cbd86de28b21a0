"""Several models in one backend within the model memory budget (backend.model_memory_mb):
the least recently used idle model is unloaded for another, a held one never is, and a
model larger than the budget is refused. Two small random models built here (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import ModelTooLarge, Unavailable
from edgellm.models.add import add_model
from edgellm.models.store import ModelStore
from edgellm.server.budget import MIB, MemoryBudget, model_memory_budget
from edgellm.server.models import ModelManager
from edgellm.server.status import memory
from tests.python.tiny_models import build, quiet


@pytest.mark.parametrize(
    ("loaded", "busy", "size", "want"),
    [
        ({"a": 4, "b": 4}, set(), 2, []),  # fits beside them
        ({"a": 4, "b": 4}, set(), 4, ["a"]),  # least recently used first
        ({"a": 4, "b": 4}, {"a"}, 4, ["b"]),  # a held model stays
        ({"a": 4, "b": 4}, set(), 10, ["a", "b"]),
        ({"a": 4, "b": 4}, {"b"}, 8, Unavailable),  # only idle ones may go
        ({}, set(), 11, ModelTooLarge),  # larger than the whole budget
    ],
)
def test_budget_victims(loaded: dict[str, int], busy: set[str], size: int, want) -> None:
    budget = MemoryBudget(10)
    for model_id, bytes_ in loaded.items():
        budget.add(model_id, bytes_)
        if model_id in busy:
            budget.acquire(model_id)
    if isinstance(want, list):
        assert budget.victims("new", size) == want
    else:
        with pytest.raises(want, match="new"):
            budget.victims("new", size)


def test_budget_setting() -> None:
    assert model_memory_budget(40, "cpu") == 40 * MIB
    assert model_memory_budget(0, "cpu") == memory("cpu")[0] // 2  # the default


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, store_dir: Path) -> ModelStore:
    root = tmp_path_factory.mktemp("budget")
    store = ModelStore(root / "models")
    for i, arch in enumerate(("llama", "qwen2")):
        add_model(store, build(arch, root / arch, store_dir, seed=i), f"tiny-{i}", quiet)
    return store


def _manager(store: ModelStore, budget: int) -> ModelManager:
    return ModelManager(store, "torch", "cpu", calibrate=False, memory_budget=budget)


def _answer(models: ModelManager, model_id: str) -> list[int]:
    request = GenerationRequest("r", raw_prompt="The river", sampling=SamplingParams(max_tokens=4))
    with models.hold(model_id) as model:
        return [t for chunk in model.engine.generate(request) for t in chunk.token_ids]


def test_two_models_budget_for_one(two_models: ModelStore) -> None:
    sizes = [two_models.manifest(f"tiny-{i}").weights_bytes for i in range(2)]
    models = _manager(two_models, max(sizes) + min(sizes) // 2)
    first = _answer(models, "tiny-0")
    assert [m.manifest.id for m in models.loaded()] == ["tiny-0"]
    assert _answer(models, "tiny-1")  # makes room: tiny-0 goes
    assert [m.manifest.id for m in models.loaded()] == ["tiny-1"]
    assert models.memory()[1:] == (sizes[1], 1)
    # A running request's model is never unloaded.
    with models.hold("tiny-1"), pytest.raises(Unavailable, match="tiny-1"):
        models.load("tiny-0")
    assert _answer(models, "tiny-0") == first  # in turn, the same answer after a reload
    assert [m.manifest.id for m in models.loaded()] == ["tiny-0"]
    assert models.memory()[2] == 2
    assert models.load_seconds("tiny-1") > 0  # remembered after the unload


def test_model_larger_than_budget(two_models: ModelStore) -> None:
    models = _manager(two_models, 1 << 20)
    with pytest.raises(ModelTooLarge, match="model_memory_mb"):
        models.load("tiny-0")
    assert models.loaded() == [] and models.memory()[1] == 0
