"""tests/images: the built images, moat mode and the chart's pod under podman. Slow (image builds, a pod) and
needing podman, so only `make images-test` runs them: it builds the images and sets ROUTEIQ_IMAGES_TEST=1.
A plain `pytest` (and so `make test` and CI) does not collect this folder."""

from __future__ import annotations

import os

import pytest
from harness import podman

if not os.environ.get("ROUTEIQ_IMAGES_TEST"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def built_images() -> None:
    podman.require_images()
