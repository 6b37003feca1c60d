"""Base images: downloaded and verified, or built locally from Debian packages; cached read-only."""

from agentbox.images.debian_build import (
    BUILD_VERSION,
    DEFAULT_MIRROR,
    KNOWN_RECIPES,
    MIRROR_ENV,
    BuiltImage,
    DebianRecipe,
    build_debian_image,
    check_build_prerequisites,
    recipe_for,
)
from agentbox.images.download import download_verified
from agentbox.images.store import ImageInfo, ImageStore

__all__ = [
    "BUILD_VERSION",
    "DEFAULT_MIRROR",
    "KNOWN_RECIPES",
    "MIRROR_ENV",
    "BuiltImage",
    "DebianRecipe",
    "ImageInfo",
    "ImageStore",
    "build_debian_image",
    "check_build_prerequisites",
    "download_verified",
    "recipe_for",
]
