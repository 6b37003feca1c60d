"""The wizard's per-session host budgets: egress bytes, disk writes, CPU time, filled in from
the chosen template's `budget:` and parsed as `create --egress-budget/--disk-write-budget/
--cpu-budget` parse them (same units, same errors)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input

from agentbox.model.budget import CREATE_OPTIONS, HostBudget, input_text, parse_budget

TITLES = {"egress_bytes": "Egress", "disk_write_bytes": "Disk writes", "cpu_seconds": "CPU time"}
PLACEHOLDERS = {"egress_bytes": "none (100M, 2G)", "disk_write_bytes": "none (2G)", "cpu_seconds": "none (10m, 1h)"}


class BudgetFields(Horizontal):
    """One box per budget; empty or 0 is no limit."""

    def compose(self) -> ComposeResult:
        for budget, _option in CREATE_OPTIONS:
            box = Input(placeholder=PLACEHOLDERS[budget], id=f"budget-{budget}")
            box.border_title = TITLES[budget]
            yield box

    def fill(self, budget: HostBudget) -> None:
        """The template's budgets, as a person would type them."""
        for name, _option in CREATE_OPTIONS:
            self.query_one(f"#budget-{name}", Input).value = input_text(name, getattr(budget, name))

    def limits(self) -> tuple[int, int, int]:
        """Egress bytes, disk-write bytes, CPU seconds (0: none); InvalidInput as the CLI says it."""
        egress, disk, cpu = (parse_budget(budget=name, text=self.query_one(f"#budget-{name}", Input).value.strip()
                                          or "0", what=option) for name, option in CREATE_OPTIONS)
        return egress, disk, cpu
