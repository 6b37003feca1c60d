"""Host budgets: sizes and durations as people write them, the template's `budget:`, and
which budget a session's use reaches."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbox.config.templates import load_template
from agentbox.errors import ConfigError, InvalidInput
from agentbox.model.api_use import ApiBudget
from agentbox.model.budget import (HostBudget, HostUse, OnExceeded, first_exceeded, input_text, parse_budget,
                                   parse_seconds, parse_size)


@pytest.mark.parametrize(("text", "value"), [("100M", 100_000_000), ("1.5GiB", 3 << 29), ("2048", 2048),
                                             ("64 KiB", 65536), ("0", 0), (5, 5), ("3mb", 3_000_000)])
def test_sizes(text: str | int, value: int) -> None:
    assert parse_size(text=text, what="--egress") == value


@pytest.mark.parametrize("text", ["ten", "-5M", "5X", "1e9", "", "5 M B"])
def test_bad_sizes_say_what_a_size_looks_like(text: str) -> None:
    with pytest.raises(InvalidInput, match="--egress") as info:
        parse_size(text=text, what="--egress")
    assert info.value.hint and "500M" in info.value.hint


def test_durations() -> None:
    assert [parse_seconds(text=t, what="--cpu") for t in ("600", "90s", "10m", "2h")] == [600, 90, 600, 7200]
    with pytest.raises(InvalidInput, match="not a duration"):
        parse_seconds(text="10 minutes", what="--cpu")


def test_the_first_budget_reached_and_what_cannot_be_measured() -> None:
    budget = HostBudget(egress_bytes=1000, disk_write_bytes=5000, cpu_seconds=60)
    assert first_exceeded(use=HostUse(egress_bytes=999, disk_write_bytes=4999, cpu_seconds=59.9), budget=budget) is None
    reached = first_exceeded(use=HostUse(egress_bytes=10, disk_write_bytes=None, cpu_seconds=61.0), budget=budget)
    assert reached is not None and (reached.budget, reached.used, reached.limit) == ("cpu_seconds", 61.0, 60)
    assert "cpu_seconds" in reached.describe() and "61.0 s of 60.0 s" in reached.describe()
    assert first_exceeded(use=HostUse(egress_bytes=10**12), budget=HostBudget()) is None  # 0: no limit


def test_the_template_budget_holds_host_and_api_budgets_side_by_side(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nimage: {build: debian-12}\nbudget:\n  requests: 100\n  egress_bytes: 100M\n"
                    "  disk_write_bytes: 2GiB\n  cpu_seconds: 10m\n  on_exceeded: pause\n")
    template = load_template(path=path)
    assert template.budget == ApiBudget(requests=100)
    assert template.host_budget == HostBudget(egress_bytes=100_000_000, disk_write_bytes=2 << 30, cpu_seconds=600,
                                              on_exceeded=OnExceeded.PAUSE)


@pytest.mark.parametrize(("line", "message"), [("egress_bytes: lots", "not a size"),
                                               ("cpu_seconds: [1]", "expected a size"),
                                               ("on_exceeded: explode", "not one of end, pause")])
def test_a_bad_template_budget_names_its_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nimage: {{build: debian-12}}\nbudget:\n  {line}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_template(path=path)
    assert "t.yaml:4" in info.value.message


@pytest.mark.parametrize(("budget", "value", "text"), [
    ("egress_bytes", 100_000_000, "100M"), ("egress_bytes", 1 << 30, "1Gi"), ("egress_bytes", 1234, "1234"),
    ("disk_write_bytes", 0, ""), ("cpu_seconds", 3600, "1h"), ("cpu_seconds", 90, "90"), ("cpu_seconds", 600, "10m")])
def test_a_limit_as_the_wizard_fills_it_in_parses_back_to_itself(budget: str, value: int, text: str) -> None:
    assert input_text(budget, value) == text
    assert parse_budget(budget=budget, text=text or "0", what="--x") == value
