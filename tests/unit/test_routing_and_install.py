"""Router decisions (routers.py), which models a pod follows (wanted.py), and the install order (volume.py)."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.router_models import LoadedModel
from routeiq_gateway.routing.routers import MAX_ROUTING_TEXT, Decision, build_plan, prompt_text
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_model_sync.volume import PREVIOUS, artifact_file, install, installed
from routeiq_model_sync.wanted import wanted_models
from routeiq_shared.config_schema import RouterSpec
from routeiq_shared.manifest import Artifact, Manifest, TrainingData, sha256_file


def decide(spec: RouterSpec, model: LoadedModel | None, body: dict[str, Any]) -> Decision:
    models = {} if model is None else {model.name: model}
    plan = build_plan(spec, {})
    return asyncio.run(plan.decide(body, models, {}, RuntimeState(), ScoringRunner(), random.Random(0)))


SPEC = RouterSpec(name="auto", artifact="router", candidates=["fast", "strong"], default="fast")


class Echo:
    """A stand-in estimator: answers with the prompt's first word, or raises on 'boom'."""

    def predict(self, texts: list[str]) -> list[str]:
        if texts[0].startswith("boom"):
            raise ValueError("cannot score")
        return [texts[0].split()[0]]


def loaded(model: Any = None) -> LoadedModel:
    return LoadedModel("router", "v7", "0" * 64, model or Echo(), 0.0)


def chat(text: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]}


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (chat("strong please"), "strong please"),
        (
            chat(
                [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]
            ),
            "a b",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "last"},
                ]
            },
            "last",
        ),
        ({"prompt": "complete me"}, "complete me"),
        ({"prompt": ["one", "two"]}, "one two"),
        ({"messages": [{"role": "system", "content": "only system"}]}, ""),
    ],
)
def test_prompt_text(body: dict[str, Any], text: str) -> None:
    assert prompt_text(body) == text


def test_prompt_text_is_bounded() -> None:
    assert len(prompt_text(chat("x" * (MAX_ROUTING_TEXT * 3)))) == MAX_ROUTING_TEXT


@pytest.mark.parametrize(
    ("model", "body", "group", "version", "reason"),
    [
        (loaded(), chat("strong reasoning"), "strong", "v7", "model"),
        (loaded(), chat("fast chat"), "fast", "v7", "model"),
        (None, chat("strong"), "fast", None, "no_model"),
        (loaded(), chat("elsewhere please"), "fast", "v7", "unknown_choice"),
        (loaded(), chat("boom"), "fast", "v7", "predict_failed"),
        (loaded(), {"model": "auto", "messages": [{"role": "system", "content": "s"}]}, "fast", "v7", "no_text"),
    ],
)
def test_decide(model: LoadedModel | None, body: dict[str, Any], group: str, version: str | None, reason: str) -> None:
    decision = decide(SPEC, model, body)
    assert (decision.group, decision.version, decision.reason, decision.router) == (group, version, reason, "auto")


def test_default_is_first_candidate_when_unset() -> None:
    spec = RouterSpec(name="auto", artifact="router", candidates=["strong", "fast"])
    assert decide(spec, None, chat("x")).group == "strong"


def test_wanted_models_from_routers_pins_and_names(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        """
model_list:
  - {model_name: a, litellm_params: {model: openai/a}}
routeiq:
  routers:
    - {name: auto, artifact: router-a, candidates: [a]}
    - {name: pinned, artifact: router-b, model_version: v3, candidates: [a]}
    - {name: cheap, strategy: cost, candidates: [a]}
"""
    )
    # A router without an artifact (cost, latency, random, custom) asks model-sync for nothing.
    assert wanted_models(config, ("extra",)) == {"extra": None, "router-a": None, "router-b": "v3"}
    # A missing or broken config contributes nothing; MODEL_NAMES still counts.
    assert wanted_models(tmp_path / "absent.yaml", ("extra",)) == {"extra": None}
    config.write_text("model_list: [")
    assert wanted_models(config, ()) == {}


def _manifest(path: Path, version: str) -> Manifest:
    sha, size = sha256_file(path)
    return Manifest(
        name="router",
        version=version,
        created_at="2026-11-22T00:00:00Z",
        artifact=Artifact(sha256=sha, size=size, format="joblib"),
        library_versions={},
        training_data=TrainingData(digest="none", rows=0),
        metrics={},
    )


def test_install_keeps_previous_and_writes_manifest_last(tmp_path: Path) -> None:
    for version, data in (("v1", b"one"), ("v2", b"two")):
        tmp = tmp_path / f".download-{version}"
        tmp.write_bytes(data)
        install(tmp_path, _manifest(tmp, version), tmp)
        assert not tmp.exists()  # renamed, not copied
    assert artifact_file(tmp_path, "router").read_bytes() == b"two"
    assert installed(tmp_path, "router").version == "v2"  # type: ignore[union-attr]
    assert artifact_file(tmp_path, "router", PREVIOUS).read_bytes() == b"one"
    assert installed(tmp_path, "router", PREVIOUS).version == "v1"  # type: ignore[union-attr]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left behind
