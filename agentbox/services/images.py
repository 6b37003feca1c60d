"""Image and template use cases: list, pull, build, remove; templates list and show."""

from __future__ import annotations

from dataclasses import dataclass

from agentbox.errors import AgentboxError, InvalidInput
from agentbox.images.store import ImageInfo
from agentbox.model.progress import CancelToken, ProgressCallback
from agentbox.model.template import BuildRecipe, Template
from agentbox.services.context import ServiceContext
from agentbox.services.golden import GoldenState, GoldenStore


@dataclass(frozen=True)
class RemovedImage:
    image: ImageInfo
    golden_ids: tuple[str, ...]  # the golden states made from it, removed first


class ImageService:
    def __init__(self, *, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def templates(self) -> tuple[Template, ...]:
        return self._ctx.catalogue.all()

    def template(self, *, name: str) -> Template:
        return self._ctx.catalogue.get(name=name)

    def list_images(self) -> tuple[ImageInfo, ...]:
        return self._ctx.images.list_images()

    def pull(self, *, template: str, on_progress: ProgressCallback, cancel: CancelToken) -> ImageInfo:
        """Make the template's image present: download and verify it, or build it locally."""
        found = self._ctx.catalogue.get(name=template)
        return self._ctx.images.ensure(template=found, on_progress=on_progress, cancel=cancel)

    def build(self, *, template: str, on_progress: ProgressCallback, cancel: CancelToken) -> ImageInfo:
        found = self._ctx.catalogue.get(name=template)
        if not isinstance(found.image, BuildRecipe):
            raise InvalidInput(f"template {template!r} uses a downloaded image; there is nothing to build",
                               hint=f"agentbox image pull {template}")
        return self._ctx.images.ensure(template=found, on_progress=on_progress, cancel=cancel)

    def golden_states(self) -> tuple[GoldenState, ...]:
        return GoldenStore(ctx=self._ctx).list()

    def remove(self, *, template: str) -> RemovedImage:
        """The template's image and the golden states made from it (clones sit on both)."""
        found = self._ctx.catalogue.get(name=template)
        image_id = self._ctx.images.image_id_for(template=found)
        users = self._workspaces_using(image_id=image_id)
        if users:
            raise InvalidInput(
                f"image {image_id} is the base disk of workspace(s) {', '.join(users)}; removing it would break them",
                hint="destroy those workspaces first (agentbox destroy NAME)")
        goldens = GoldenStore(ctx=self._ctx)
        removed = []
        for state in goldens.list():
            if state.image_id == image_id:
                goldens.remove(golden_id=state.golden_id)
                removed.append(state.golden_id)
        return RemovedImage(image=self._ctx.images.remove(template=found), golden_ids=tuple(removed))

    def _workspaces_using(self, *, image_id: str) -> list[str]:
        users = []
        for name in self._ctx.records.names():
            try:
                record = self._ctx.records.load(name=name)
            except AgentboxError:
                continue
            if record is not None and record.image_id == image_id:
                users.append(name)
        return users
