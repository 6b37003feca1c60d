"""The New workspace wizard: name (checked as you type), template, resources.

It only collects a `CreateRequest`; the dashboard runs the create with a progress screen.
Network mode and folders to share slot in here once their services exist.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from agentbox.bootstrap import Services
from agentbox.errors import AgentboxError
from agentbox.model.names import validate_workspace_name
from agentbox.model.template import Template
from agentbox.services.create import CreateRequest, resolve_resources
from agentbox.tui.messages import TemplatesLoaded
from agentbox.tui.operations import error_info

RESOURCE_FIELDS = (("cpus", "CPUs"), ("memory", "Memory MiB"), ("disk", "Disk GiB"))


class NewWorkspaceScreen(ModalScreen[CreateRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, services: Services, taken: frozenset[str]) -> None:
        super().__init__(classes="dialog-screen")
        self._services = services
        self._taken = taken
        self._templates: dict[str, Template] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wizard"):
            yield Label("New workspace", classes="dialog-title")
            name = Input(placeholder="for example: my-agent-1", id="name")
            name.border_title = "Name"
            yield name
            yield Static("", id="name-problem", classes="problem", markup=False)
            yield Label("Template", classes="field-label")
            yield Select[str]([], prompt="Template", id="template", allow_blank=True)
            yield Static("loading templates…", id="template-about", classes="hint", markup=False)
            with Horizontal(id="resources"):
                for field, title in RESOURCE_FIELDS:
                    box = Input(type="integer", id=field)
                    box.border_title = title
                    yield box
            yield Static("", id="resources-problem", classes="problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create (Enter)", id="create", variant="primary", disabled=True)
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()
        self._load_templates(self._services)

    @work(thread=True, exit_on_error=False)
    def _load_templates(self, services: Services) -> None:
        try:
            self.post_message(TemplatesLoaded(services.images.templates()))
        except Exception as exc:  # noqa: BLE001 - shown in the dialog
            self.post_message(TemplatesLoaded((), error=error_info(title="templates", exc=exc)))

    def on_templates_loaded(self, message: TemplatesLoaded) -> None:
        about = self.query_one("#template-about", Static)
        if message.error:
            about.update(f"✗ {message.error.message}")
            return
        self._templates = {t.name: t for t in message.templates}
        select = self.query_one("#template", Select)
        select.set_options((t.name, t.name) for t in message.templates)
        default = self._services.ctx.settings.default_template
        if default in self._templates:
            select.value = default
        elif message.templates:
            select.value = message.templates[0].name
        self._update_create()

    def on_select_changed(self, event: Select.Changed) -> None:
        template = self._templates.get(event.value) if isinstance(event.value, str) else None
        about = self.query_one("#template-about", Static)
        if template is None:
            about.update("pick a template")
        else:
            about.update(template.description or template.name)
            # A template's resources are its defaults: choosing one fills them in.
            r = template.resources
            for field, value in (("cpus", r.vcpus), ("memory", r.memory_mib), ("disk", r.disk_gib)):
                self.query_one(f"#{field}", Input).value = str(value)
        self._update_create()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "name":
            feedback = self.query_one("#name-problem", Static)
            feedback.update(self._name_feedback(event.value))
            feedback.set_class(not self._name_problem(event.value), "ok")  # green when good, red when not
        else:
            self.query_one("#resources-problem", Static).update("")
        self._update_create()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "create":
            self._submit()
        else:
            self.dismiss(None)

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
        request = CreateRequest(name=name, template=template.name, vcpus=numbers[0], memory_mib=numbers[1],
                                disk_gib=numbers[2])
        try:
            resolve_resources(template=template, request=request)  # the service's own limits
        except AgentboxError as exc:
            self.query_one("#resources-problem", Static).update(f"✗ {exc.message}")
            return
        self.dismiss(request)
