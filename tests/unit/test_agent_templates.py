"""Agent templates: pinned npm/pip installs in the layer's recipe and key, and the `agent:`
section, each checked where it is written (file:line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbox.config.templates import TemplateCatalogue, builtin_templates_dir, load_template
from agentbox.errors import ConfigError, InvalidInput
from agentbox.images import debian_build
from agentbox.images.layer_build import layer_recipe
from agentbox.images.store import ImageStore
from agentbox.model.installs import NpmPackage, PipPackage, parse_npm_spec, parse_pip_spec
from agentbox.model.template import BuildRecipe, Template

CLAUDE = parse_npm_spec("@anthropic-ai/claude-code@2.1.112")
CODEX = parse_npm_spec("@openai/codex@0.171.0")
AIDER = parse_pip_spec("aider-chat==0.86.2")


def _base() -> debian_build.DebianRecipe:
    return debian_build.recipe_for(name="debian-12")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


# -- the recipe ----------------------------------------------------------------------------


def test_the_same_installs_in_any_order_are_one_layer() -> None:
    first = layer_recipe(base=_base(), apt=["git"], npm=[CODEX, CLAUDE], pip=[AIDER])
    second = layer_recipe(base=_base(), apt=["git", "git"], npm=[CLAUDE, CODEX, CLAUDE], pip=[AIDER])
    assert first.key() == second.key()
    assert first.npm == (CLAUDE, CODEX)


def test_a_changed_npm_version_is_a_new_layer() -> None:
    before = layer_recipe(base=_base(), apt=[], npm=[CLAUDE])
    after = layer_recipe(base=_base(), apt=[], npm=[parse_npm_spec("@anthropic-ai/claude-code@2.1.111")])
    assert after.key() != before.key()


def test_a_changed_pip_version_is_a_new_layer() -> None:
    before = layer_recipe(base=_base(), apt=[], pip=[AIDER])
    assert layer_recipe(base=_base(), apt=[], pip=[parse_pip_spec("aider-chat==0.86.1")]).key() != before.key()


def test_installs_bring_the_debian_packages_they_need_into_the_recipe() -> None:
    assert {"nodejs", "npm"} <= set(layer_recipe(base=_base(), apt=[], npm=[CODEX]).apt)
    assert "python3-venv" in layer_recipe(base=_base(), apt=[], pip=[AIDER]).apt
    # Naming them yourself is the same recipe.
    assert layer_recipe(base=_base(), apt=["nodejs"], npm=[CODEX]).key() == \
        layer_recipe(base=_base(), apt=[], npm=[CODEX]).key()


def test_an_apt_only_layer_keeps_its_id() -> None:
    # Adding npm/pip to the recipe must not make every cached apt-only layer stale.
    recipe = layer_recipe(base=_base(), apt=["jq"])
    assert recipe.npm == () and recipe.pip == ()
    assert "npm" not in recipe.key() and recipe.disk_size_gib == 4


def test_two_versions_of_one_package_are_refused() -> None:
    with pytest.raises(InvalidInput, match="more than one version"):
        layer_recipe(base=_base(), apt=[], npm=[CODEX, parse_npm_spec("@openai/codex@0.170.0")])


@pytest.mark.parametrize("bad", ["@openai/codex", "@openai/codex@^0.171.0", "@openai/codex@latest",
                                 "codex@>=1.0.0", "Codex@1.0.0", "codex@1.0", "codex@1.0.0 --foo", "-g@1.0.0"])
def test_an_npm_spec_must_be_pinned_to_one_exact_version(bad: str) -> None:
    with pytest.raises(InvalidInput, match="pinned to an exact version"):
        parse_npm_spec(bad)


@pytest.mark.parametrize("bad", ["aider-chat", "aider-chat>=0.86", "aider-chat==", "aider-chat==0.86.*",
                                 "aider-chat[extra]==0.86.2", "-e==1.0", "aider chat==1.0"])
def test_a_pip_spec_must_be_pinned_to_one_exact_version(bad: str) -> None:
    with pytest.raises(InvalidInput, match="pinned to an exact version"):
        parse_pip_spec(bad)


def test_pip_names_are_normalised() -> None:
    assert parse_pip_spec("Aider_Chat==0.86.2") == PipPackage(name="aider-chat", version="0.86.2")


def test_templates_with_the_same_recipe_share_one_image(tmp_path: Path) -> None:
    store = ImageStore(image_dir=tmp_path)

    def template(name: str, npm: tuple[NpmPackage, ...]) -> Template:
        return Template(name=name, description="", image=BuildRecipe(recipe="debian-12", npm=npm))

    one = store.image_id_for(template=template("one", (CLAUDE,)))
    assert one.startswith("debian-12-layer-")
    assert store.image_id_for(template=template("two", (CLAUDE,))) == one
    assert store.image_id_for(template=template("three", (CODEX,))) != one


# -- the templates ----------------------------------------------------------------------------


def test_the_built_in_agent_templates_load_with_their_agents() -> None:
    catalogue = TemplateCatalogue(builtin_dir=builtin_templates_dir(), user_dir=Path("/nonexistent"))
    agents = {name: catalogue.get(name=name) for name in ("claude-code", "codex", "aider", "agents")}
    assert [a.command for a in agents["agents"].agents] == ["claude", "codex", "aider"]
    assert agents["claude-code"].agents[0].providers == ("anthropic",)
    assert agents["codex"].agents[0].api_hosts == ("api.openai.com",)
    assert agents["aider"].agents[0].providers == ("anthropic", "openai")
    # The combined template installs exactly what the three do, with the same pins.
    combined = agents["agents"].image
    assert isinstance(combined, BuildRecipe)
    singles = [agents[n].image for n in ("claude-code", "codex", "aider")]
    assert set(combined.npm) == {p for s in singles if isinstance(s, BuildRecipe) for p in s.npm}
    assert set(combined.pip) == {p for s in singles if isinstance(s, BuildRecipe) for p in s.pip}
    for template in agents.values():
        assert template.policy.network.value == "allowlist" and template.policy.allowlist == ()


def test_npm_and_pip_are_read_into_the_recipe(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\n  npm: ['@openai/codex@0.171.0']\n"
                  "  pip: [aider-chat==0.86.2]\n")
    assert load_template(path=path).image == BuildRecipe(recipe="debian-12", npm=(CODEX,), pip=(AIDER,))


def test_an_unpinned_npm_package_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\n  npm:\n    - '@openai/codex@0.171.0'\n"
                  "    - '@anthropic-ai/claude-code'\n")
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert info.value.message.startswith(f"{path}:6: image.npm[1]: '@anthropic-ai/claude-code' is not an npm "
                                         "package pinned to an exact version")
    assert "npm view" in (info.value.hint or "")


def test_a_pip_package_pinned_twice_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  build: debian-12\n  pip:\n    - aider-chat==0.86.2\n"
                  "    - aider_chat==0.86.1\n")
    with pytest.raises(ConfigError, match=rf"^{path}:6: image\.pip\[1\]: aider-chat is pinned twice"):
        load_template(path=path)


def test_npm_on_a_downloaded_image_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nimage:\n  url: https://example.invalid/x.img\n  sha256: "
                  f"{'0' * 64}\n  npm: ['@openai/codex@0.171.0']\n")
    with pytest.raises(ConfigError, match=rf"^{path}:5: image\.npm: a downloaded image is used as it is"):
        load_template(path=path)


AGENT = ("agent:\n  command: claude\n  description: Claude Code\n  providers: [anthropic]\n"
         "  api_hosts: [api.anthropic.com]\n")


def test_one_agent_is_named_after_its_template(tmp_path: Path) -> None:
    template = load_template(path=_write(tmp_path, "name: t\nimage: {build: debian-12}\n" + AGENT))
    assert [(a.name, a.command, a.providers) for a in template.agents] == [("t", "claude", ("anthropic",))]


@pytest.mark.parametrize(("change", "where", "message"), [
    (("providers: [anthropic]", "providers: [anthropic, acme]"), "6: agent.providers[1]", "'acme' is not a provider"),
    (("api.anthropic.com", "https://api.anthropic.com/v1"), "7: agent.api_hosts[0]", "is not a host name"),
    (("  command: claude\n", ""), "3: agent.command", "missing required field"),
    (("description: Claude Code", "description: " + "x" * 61), "5: agent.description", "one line of at most 60"),
    (("  command: claude\n", "  command: claude\n  env: {A: b}\n"), "5: agent.env", "unknown key"),
])
def test_a_bad_agent_section_is_refused_at_its_line(tmp_path: Path, change: tuple[str, str], where: str,
                                                   message: str) -> None:
    path = _write(tmp_path, "name: t\nimage: {build: debian-12}\n" + AGENT.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_template(path=path)
    assert info.value.message.startswith(f"{path}:{where}: ") and message in info.value.message


def test_several_agents_need_names_of_their_own(tmp_path: Path) -> None:
    body = ("agent:\n  - {name: a, command: x, description: one}\n  - {name: a, command: y, description: two}\n")
    path = _write(tmp_path, "name: t\nimage: {build: debian-12}\n" + body)
    with pytest.raises(ConfigError, match=rf"^{path}:5: agent\[1\]\.name: two agents are named 'a'"):
        load_template(path=path)
