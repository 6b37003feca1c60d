"""The New workspace wizard: first what to run (an agent, each with its one-line description,
or a plain VM), then name (checked as you type), template, resources, per-session budgets
(budget_fields.py), folders to share
(picked in a directory tree), network mode and allowlist; then, for an agent whose provider
has no API key stored yet, the key (masked, stored on the host; skippable: key_screen.py).

It collects a `NewWorkspace` (storing only keys); the dashboard runs the create with a
progress screen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.model.names import validate_workspace_name
from agentbox.model.network import NetworkMode, parse_allow_entry
from agentbox.model.secret_rules import SecretFinding, SecretScan
from agentbox.model.shares import SecretChoice
from agentbox.model.template import Template
from agentbox.services.create import CreateRequest
from agentbox.services.share_paths import default_tag
from agentbox.tui.budget_fields import BudgetFields
from agentbox.tui.key_screen import KeyScreen
from agentbox.tui.messages import TemplatesLoaded
from agentbox.tui.operations import error_info
from agentbox.tui.secrets_screen import SecretsScreen
from agentbox.tui.shares_screen import check_share_folder
from agentbox.tui.views import NETWORK_MEANING, share_place
from agentbox.tui.widgets import NETWORK_MARKS, FolderPicker

RESOURCE_FIELDS = (("cpus", "CPUs"), ("memory", "Memory MiB"), ("disk", "Disk GiB"))
PLAIN_VM = "plain"  # the "what to run" choice without an agent
PLAIN_VM_TEXT = "A plain VM, no agent (pick its template below)"
FROM_TEMPLATE = "template"
NETWORK_CHOICES = [("as the template says", FROM_TEMPLATE)] + [
    (f"{NETWORK_MARKS[mode][0]} {mode.value}: {NETWORK_MEANING[mode]}", mode.value) for mode in NetworkMode]


@dataclass(frozen=True)
class NewWorkspace:
    request: CreateRequest
    allow: tuple[str, ...] = ()  # allowlist entries to add once it exists
    # The providers whose keys the chosen template's agents need (anthropic, openai); the
    # wizard has already asked for any that had no key stored (stored or skipped).
    providers: tuple[str, ...] = ()


def run_choices(templates: tuple[Template, ...]) -> list[tuple[str, str]]:
    """The wizard's first question: each agent template, described by its agent, then a plain
    VM; as (text, value) for a Select, the value a template name or PLAIN_VM."""
    options = []
    for template in templates:
        if not template.agents:
            continue
        if len(template.agents) == 1:
            text = template.agents[0].description
        else:
            text = f"All of them: {', '.join(agent.name for agent in template.agents)}"
        options.append((text, template.name))
    options.append((PLAIN_VM_TEXT, PLAIN_VM))
    return options


def template_providers(template: Template) -> tuple[str, ...]:
    return tuple(dict.fromkeys(provider for agent in template.agents for provider in agent.providers))


def split_entries(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", text) if part]


class ChosenFolders(OptionList):
    """The folders to share; Delete takes the highlighted one off the list."""

    BINDINGS = [Binding("delete,backspace", "remove", "Remove folder")]

    def action_remove(self) -> None:
        if self.highlighted is not None:
            self.remove_option_at_index(self.highlighted)
        self.display = self.option_count > 0


class NewWorkspaceScreen(ModalScreen[NewWorkspace | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, services: Services, taken: frozenset[str]) -> None:
        super().__init__(classes="dialog-screen")
        self._services = services
        self._taken = taken
        self._templates: dict[str, Template] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wizard"):
            yield Label("New workspace", classes="dialog-title")
            yield Label("What to run", classes="field-label")
            yield Select[str]([], prompt="What to run", id="what", allow_blank=True)
            yield Static("loading templates…", id="template-about", classes="hint", markup=False)
            name = Input(placeholder="for example: my-agent-1", id="name")
            name.border_title = "Name"
            yield name
            yield Static("", id="name-problem", classes="problem", markup=False)
            with Horizontal(id="resources"):
                # The template beside the resources it fills in: an agent's own, or any for a plain VM.
                yield Select[str]([], prompt="Template", id="template", allow_blank=True)
                for field, title in RESOURCE_FIELDS:
                    box = Input(type="integer", id=field)
                    box.border_title = title
                    yield box
            yield Static("", id="resources-problem", classes="problem", markup=False)
            yield Label("Budgets per session (optional; empty: no limit)", classes="field-label")
            yield BudgetFields(id="budgets")
            yield Static("", id="budgets-problem", classes="problem", markup=False)
            yield Label("Folders to share, read-only (optional)", classes="field-label")
            yield FolderPicker(root=Path.home(), placeholder="/path/to/a/project", id="wizard-folder")
            yield Button("Share this folder (Enter in the path)", id="add-folder", compact=True)
            yield ChosenFolders(id="folders")
            yield Static("", id="folders-problem", classes="problem", markup=False)
            yield Label("Network", classes="field-label")
            yield Select[str](NETWORK_CHOICES, id="network", allow_blank=False, value=FROM_TEMPLATE)
            allowlist = Input(placeholder="pypi.org, *.github.com (used in allowlist mode)", id="allowlist")
            allowlist.border_title = "Allowlist"
            yield allowlist
            yield Static("", id="network-about", classes="hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create (Enter)", id="create", variant="primary", disabled=True)
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#what", Select).focus()
        self.query_one("#folders").display = False
        self._load_templates(self._services)

    @work(thread=True)
    def _load_templates(self, services: Services) -> None:
        try:
            self.post_message(TemplatesLoaded(services.images.templates()))
        except AgentboxError as exc:  # shown in the dialog
            self.post_message(TemplatesLoaded((), error=error_info(title="templates", exc=exc)))

    def on_templates_loaded(self, message: TemplatesLoaded) -> None:
        about = self.query_one("#template-about", Static)
        if message.error:
            about.update(f"✗ {message.error.message}")
            return
        self._templates = {t.name: t for t in message.templates}
        select = self.query_one("#template", Select)
        select.set_options((t.name, t.name) for t in message.templates)
        default = self._services.create.default_template
        if default in self._templates:
            select.value = default
        elif message.templates:
            select.value = message.templates[0].name
        what = self.query_one("#what", Select)
        with what.prevent(Select.Changed):  # only the user's choice moves on to the name
            what.set_options(run_choices(message.templates))
            chosen = self._chosen()
            what.value = chosen.name if chosen is not None and chosen.agents else PLAIN_VM
        self._update_create()

    def _what_chosen(self, value: object) -> None:
        select = self.query_one("#template", Select)
        if value == PLAIN_VM:
            current = self._chosen()
            if current is None or current.agents:  # back to a template without an agent
                plain = [t.name for t in self._templates.values() if not t.agents]
                default = self._services.create.default_template
                if plain:
                    select.value = default if default in plain else plain[0]
        elif isinstance(value, str) and value in self._templates:
            select.value = value
        self.query_one("#name", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "what":
            self._what_chosen(event.value)
            return
        if event.select.id == "network":
            self._network_about()
            return
        template = self._templates.get(event.value) if isinstance(event.value, str) else None
        about = self.query_one("#template-about", Static)
        if template is None:
            about.update("pick a template")
        else:
            agents = "".join(f"\n{agent.name}: {agent.description} (starts `{agent.command}`)"
                             for agent in template.agents)
            about.update((template.description or template.name) + agents)
            # A template's resources are its defaults: choosing one fills them in.
            r = template.resources
            for field, value in (("cpus", r.vcpus), ("memory", r.memory_mib), ("disk", r.disk_gib)):
                self.query_one(f"#{field}", Input).value = str(value)
            self.query_one(BudgetFields).fill(template.host_budget)
        self._network_about()
        self._update_create()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("wizard-folder-path", "allowlist"):
            self.query_one("#folders-problem", Static).update("")
            self._network_about()
            return
        if event.input.id == "name":
            feedback = self.query_one("#name-problem", Static)
            feedback.update(self._name_feedback(event.value))
            feedback.set_class(not self._name_problem(event.value), "ok")  # green when good, red when not
        elif (event.input.id or "").startswith("budget-"):
            self.query_one("#budgets-problem", Static).update("")
        else:
            self.query_one("#resources-problem", Static).update("")
        self._update_create()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "wizard-folder-path":
            self._add_folder()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "create":
            self._submit()
        elif event.button.id == "add-folder":
            self._add_folder()
        else:
            self.dismiss(None)

    # -- folders and network ----------------------------------------------------------

    def _folders(self) -> list[str]:
        chosen = self.query_one(ChosenFolders)
        return [str(chosen.get_option_at_index(i).id) for i in range(chosen.option_count)]

    def _add_folder(self) -> None:
        problem = self.query_one("#folders-problem", Static)
        source = self.query_one(FolderPicker).value
        if not source:
            problem.update("✗ pick a folder in the tree, or type its path")
            return
        try:
            path = check_share_folder(services=self._services, source=source)
        except AgentboxError as exc:
            problem.update(f"✗ {exc.message}" + (f"\nWhat to do: {exc.hint}" if exc.hint else ""))
            problem.scroll_visible()  # below the path, maybe out of sight in a short terminal
            return
        tag = default_tag(path)
        if tag in {default_tag(Path(f)) for f in self._folders()}:
            problem.update(f"✗ a folder named {tag} is already on the list (one share per name)")
            return
        chosen = self.query_one(ChosenFolders)
        chosen.add_option(Option(f"{path} → {share_place(tag)}", id=str(path)))
        chosen.highlighted = chosen.option_count - 1  # Delete there takes it back off
        chosen.display = True
        problem.update("")

    def _network(self) -> str | None:
        value = self.query_one("#network", Select).value
        return value if isinstance(value, str) and value != FROM_TEMPLATE else None

    def _allowlist_problem(self) -> str:
        for entry in split_entries(self.query_one("#allowlist", Input).value):
            try:
                parse_allow_entry(text=entry)
            except AgentboxError as exc:
                return f"✗ {exc.message}"
        return ""

    def _network_about(self) -> None:
        about = self.query_one("#network-about", Static)
        about.set_class(False, "problem")
        if problem := self._allowlist_problem():
            about.set_class(True, "problem")
            about.update(problem)
            return
        template = self._chosen()
        mode = self._network() or (template.policy.network.value if template else "")
        own = ", ".join(template.policy.allowlist) if template and template.policy.allowlist else ""
        about.update((f"It starts with network {mode}" if mode else "")
                     + (f"; {template.name if template else 'the template'} allows {own}" if own else "")
                     + (" (w on the dashboard switches it later)" if mode else ""))

    def action_cancel(self) -> None:
        self.dismiss(None)

    # -- checking ----------------------------------------------------------------------

    def _name_problem(self, name: str) -> str:
        try:
            validate_workspace_name(name)
        except AgentboxError as exc:
            return exc.message
        return f"a workspace named {name} already exists" if name in self._taken else ""

    def _name_feedback(self, name: str) -> str:
        if not name:
            return ""
        problem = self._name_problem(name)
        return f"✗ {problem}" if problem else f"✓ {name} is a good name"

    def _update_create(self) -> None:
        name = self.query_one("#name", Input).value
        ready = bool(name) and not self._name_problem(name) and self._chosen() is not None
        self.query_one("#create", Button).disabled = not ready

    def _chosen(self) -> Template | None:
        value = self.query_one("#template", Select).value
        return self._templates.get(value) if isinstance(value, str) else None

    def _submit(self) -> None:
        name = self.query_one("#name", Input).value
        template = self._chosen()
        if self._name_problem(name) or template is None:
            self.query_one("#name", Input).focus()
            self.query_one("#name-problem", Static).update(self._name_feedback(name) or "✗ enter a name")
            return
        try:
            numbers = [int(self.query_one(f"#{field}", Input).value) for field, _ in RESOURCE_FIELDS]
        except ValueError:
            self.query_one("#resources-problem", Static).update("✗ CPUs, memory and disk must be whole numbers")
            return
        try:
            egress, disk_writes, cpu = self.query_one(BudgetFields).limits()
        except AgentboxError as exc:  # the CLI's own words (`create --egress-budget lots`)
            problem = self.query_one("#budgets-problem", Static)
            problem.update(f"✗ {exc.message}" + (f"\nWhat to do: {exc.hint}" if exc.hint else ""))
            problem.scroll_visible()
            return
        request = CreateRequest(name=name, template=template.name, vcpus=numbers[0], memory_mib=numbers[1],
                                disk_gib=numbers[2], network=self._network(), shares=tuple(self._folders()),
                                egress_bytes=egress, disk_write_bytes=disk_writes, cpu_seconds=cpu)
        try:
            self._services.create.resources(template=template, request=request)  # the service's own limits
        except AgentboxError as exc:
            self.query_one("#resources-problem", Static).update(f"✗ {exc.message}")
            return
        if self._allowlist_problem():
            self.query_one("#allowlist", Input).focus()
            return
        entries = [parse_allow_entry(text=entry).render() for entry in split_entries(
            self.query_one("#allowlist", Input).value)]
        chosen = NewWorkspace(request=request, allow=tuple(dict.fromkeys(entries)),
                              providers=template_providers(template))
        if request.shares:
            self._scan_folders(self._services, chosen)  # likely secrets first, as the shares screen does
        else:
            self._ask_keys(chosen)

    @work(thread=True, exclusive=True, group="wizard-scan")
    def _scan_folders(self, services: Services, chosen: NewWorkspace) -> None:
        findings: list[SecretFinding] = []
        complete = True
        try:
            for folder in chosen.request.shares:
                scan = services.shares.scan(source=folder)
                complete = complete and scan.complete
                findings += [replace(f, path=f"{Path(folder).name}/{f.path}") for f in scan.findings]
        except AgentboxError as exc:
            self.app.call_from_thread(self.query_one("#folders-problem", Static).update, f"✗ {exc.message}")
            return
        self.app.call_from_thread(self._scanned, chosen, SecretScan(findings=tuple(findings), complete=complete))

    def _scanned(self, chosen: NewWorkspace, scan: SecretScan) -> None:
        if not scan.findings and scan.complete:
            self._ask_keys(chosen)
            return

        def decided(secrets: SecretChoice | None) -> None:
            if secrets is not None:
                self._ask_keys(replace(chosen, request=replace(chosen.request, share_secrets=secrets.value)))

        self.app.push_screen(SecretsScreen(source="the folders to share", scan=scan), decided)

    # -- the agent's API keys ------------------------------------------------------------

    def _ask_keys(self, chosen: NewWorkspace) -> None:
        """Ask for each needed provider's key that is not stored yet, one after the other,
        then hand the request on (a skipped key does not stop the create)."""
        try:
            stored = {key.provider for key in self._services.keys.list()}
        except AgentboxError:
            stored = set()  # an unreadable key index: ask, and storing says what is wrong
        self._ask_next_key(chosen, [p for p in chosen.providers if p not in stored])

    def _ask_next_key(self, chosen: NewWorkspace, missing: list[str]) -> None:
        if not missing:
            self.dismiss(chosen)
            return
        provider, rest = missing[0], missing[1:]
        template = self._templates.get(chosen.request.template or "")
        agents = [a.name for a in template.agents if provider in a.providers] if template else []
        self.app.push_screen(
            KeyScreen(services=self._services, provider=provider, agent=", ".join(agents) or chosen.request.name),
            lambda _stored: self._ask_next_key(chosen, rest))
