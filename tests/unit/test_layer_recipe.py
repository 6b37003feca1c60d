"""Layers: the recipe's hash, and a template's `packages:` checked where it is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentbox.config.templates import load_template
from agentbox.errors import ConfigError, InvalidInput, PermissionDenied
from agentbox.images import debian_build, layer_build
from agentbox.images.layer_build import layer_recipe
from agentbox.images.store import ImageStore
from agentbox.model.progress import CancelToken, ignore_progress
from agentbox.model.template import BuildRecipe, Template


def _base() -> debian_build.DebianRecipe:
    return debian_build.recipe_for(name="debian-12")


def test_the_same_recipe_has_the_same_key_whatever_the_order_and_repeats() -> None:
    first = layer_recipe(base=_base(), apt=["jq", "git"])
    second = layer_recipe(base=_base(), apt=["git", "jq", "git"])
    assert first == second and first.key() == second.key()
    assert first.apt == ("git", "jq")
    assert len(first.key()) == 64


def test_other_packages_are_another_layer() -> None:
    assert layer_recipe(base=_base(), apt=["jq"]).key() != layer_recipe(base=_base(), apt=["jq", "git"]).key()


@pytest.mark.parametrize("change", [{"packages": _base().packages + ("vim",)}, {"suite": "trixie"},
                                    {"disk_size_gib": 5}])
def test_a_changed_base_changes_the_layer_key(change: dict[str, object]) -> None:
    before = layer_recipe(base=_base(), apt=["jq"])
    after = layer_recipe(base=dataclasses.replace(_base(), **change), apt=["jq"])
    assert after.key() != before.key()


def test_a_new_base_build_version_changes_the_layer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = layer_recipe(base=_base(), apt=["jq"]).key()
    monkeypatch.setattr(debian_build, "BUILD_VERSION", debian_build.BUILD_VERSION + 1)
    assert layer_recipe(base=_base(), apt=["jq"]).key() != before


def test_a_new_layer_version_changes_the_key_but_not_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    base_key = _base().key()
    before = layer_recipe(base=_base(), apt=["jq"]).key()
    monkeypatch.setattr(layer_build, "LAYER_VERSION", layer_build.LAYER_VERSION + 1)
    assert layer_recipe(base=_base(), apt=["jq"]).key() != before
    assert _base().key() == base_key


def test_the_mirror_is_not_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = layer_recipe(base=_base(), apt=["jq"]).key()
    monkeypatch.setenv(debian_build.MIRROR_ENV, "http://127.0.0.1:9/debian")
    assert layer_recipe(base=_base(), apt=["jq"]).key() == before


@pytest.mark.parametrize("bad", ["", "J", "jq=1.6", "-o", "jq;rm", "../jq", "jq q"])
def test_a_layer_of_bad_names_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        layer_recipe(base=_base(), apt=[bad])


def test_image_ids_share_a_layer_and_keep_the_base_without_packages(tmp_path: Path) -> None:
    store = ImageStore(image_dir=tmp_path)

    def template(name: str, packages: tuple[str, ...]) -> Template:
        return Template(name=name, description="", image=BuildRecipe(recipe="debian-12", packages=packages))

    plain = store.image_id_for(template=template("plain", ()))
    one = store.image_id_for(template=template("one", ("git", "jq")))
    two = store.image_id_for(template=template("two", ("jq", "git")))
    assert plain.startswith("debian-12-") and "layer" not in plain
    assert one == two and one.startswith("debian-12-layer-")
    assert store.image_id_for(template=template("three", ("jq",))) != one


# -- templates ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_image_packages_are_read_sorted_and_without_repeats(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\n  packages: [jq, git, jq]\n")
    assert load_template(path=path).image == BuildRecipe(recipe="debian-12", packages=("git", "jq"))


@pytest.mark.parametrize("bad", ["jq=1.6", "Git", "-y", "x", "a b", "jq;reboot"])
def test_a_bad_package_name_is_refused_at_its_line(tmp_path: Path, bad: str) -> None:
    path = _write(tmp_path, f"name: t\nimage:\n  build: debian-12\n  packages:\n    - git\n    - {bad!r}\n")
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert info.value.message.startswith(f"{path}:6: image.packages[1]: {bad!r} is not a Debian package name")


def test_a_package_that_is_not_a_string_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\n  packages:\n    - {jq: 1}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:5: image\.packages\[0\]: expected a string"):
        load_template(path=path)


def test_packages_on_a_downloaded_image_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  url: https://example.invalid/x.img\n  sha256: "
                  f"{'0' * 64}\n  packages: [jq]\n")
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert info.value.message.startswith(f"{path}:5: image.packages: a downloaded image is used as it is")


def test_cloud_init_packages_are_refused_with_where_they_go(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\ncloud_init:\n  packages: [jq]\n")
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert info.value.message.startswith(f"{path}:5: cloud_init.packages: packages are installed when the image "
                                         "is built")
    assert "image:" in (info.value.hint or "")


def test_a_layer_as_non_root_is_refused_before_anything_is_made(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(layer_build.os, "geteuid", lambda: 1000)
    image_dir = tmp_path / "images"
    template = Template(name="t", description="", image=BuildRecipe(recipe="debian-12", packages=("jq",)))
    with pytest.raises(PermissionDenied, match="root") as info:
        ImageStore(image_dir=image_dir).ensure(template=template, on_progress=ignore_progress, cancel=CancelToken())
    assert "jq" in info.value.message and "sudo" in (info.value.hint or "")
    assert not image_dir.exists()  # not even the base was started
