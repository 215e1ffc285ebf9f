"""bench/relay/ablation.py stubs methods of the relay by name: a refactor that moves one must stop
the bench (and fail here), not let its row measure the unstubbed relay under the stub's label."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "relay"


@pytest.fixture
def ablation(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "run", raising=False)  # the bench's run.py, imported as "run"
    spec = importlib.util.spec_from_file_location("bench_relay_ablation", BENCH / "ablation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("run", None)


def test_every_stubbed_part_exists_on_the_relay(ablation: ModuleType) -> None:
    ablation.stub(set(ablation.PARTS) | {ablation.BARE, ablation.CONVERSION}, apply=False)


def test_a_missing_target_stops_the_bench(ablation: ModuleType) -> None:
    class Pipeline:
        async def handle(self, request: object) -> None: ...

    async def admit(self: object, request: object, entry: object) -> None: ...

    with pytest.raises(ablation.StaleTarget, match=r"Pipeline\.admit does not exist"):
        ablation._replace(Pipeline, "admit", admit, apply=True)
    assert not hasattr(Pipeline, "admit")


def test_a_target_with_other_parameters_stops_the_bench(ablation: ModuleType) -> None:
    class Store:
        async def settle(self, key: str, outcome: str, umid: str, at: float) -> None: ...

    async def settle(self: object, key: str, outcome: str, umid: str = "") -> None: ...

    with pytest.raises(ablation.StaleTarget, match=r"takes \(self, key, outcome, umid, at\)"):
        ablation._replace(Store, "settle", settle, apply=True)
    assert Store.settle is not settle


def test_unknown_part_names_are_refused(ablation: ModuleType) -> None:
    with pytest.raises(ablation.StaleTarget, match="no such part to stub: admision"):
        ablation.stub({"admision"}, apply=False)
