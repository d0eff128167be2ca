"""certify.durations: longest-first order of the report's tests from the last run's seconds."""

from __future__ import annotations

import pytest

from certify import durations


class FakeItem:
    def __init__(self, nodeid: str, group: str | None = None) -> None:
        self.nodeid, self.group = nodeid, group

    def get_closest_marker(self, name: str):
        if name == "xdist_group" and self.group:
            return pytest.mark.xdist_group(self.group).mark
        return None


def test_longest_scope_first_groups_together() -> None:
    items = [FakeItem("a"), FakeItem("g1"), FakeItem("b"), FakeItem("g2"), FakeItem("new")]
    items[1].group = items[3].group = "fam"
    seconds = {"a": 1.0, "g1": 3.0, "g2": 4.0, "b": 5.0}
    order = [it.nodeid for it in durations.longest_first(items, seconds)]
    assert order == ["new", "g1", "g2", "b", "a"]  # unseen first; the group (7 s) before b (5 s)
    assert [it.nodeid for it in durations.longest_first(items, {})] == [it.nodeid for it in items]


def test_round_trip_and_bad_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    durations.save("cpu-float64", {"t::x": 1.23456})
    durations.save("cpu-float64", {"t::y": 2.0})
    assert durations.load("cpu-float64") == {"t::x": 1.235, "t::y": 2.0}
    assert durations.load("cpu-float32") == {}
    durations.path("cpu-float64").write_text("[1, 2")
    with pytest.raises(ValueError, match="cpu-float64.json"):
        durations.load("cpu-float64")
