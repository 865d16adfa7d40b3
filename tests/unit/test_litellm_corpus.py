"""LiteLLM's own configs through RouteIQ's config check (tests/data/litellm_corpus): every key they use is in the
compatibility table (none is unknown), at least 90% of the proxy docs' configs load or are refused only for
features the table lists as not supported, and docs/litellm-compatibility.md reports these very figures."""

from __future__ import annotations

from harness.litellm_corpus import DOC, MARKER, evaluate, render_section


def test_litellm_configs_load_or_are_refused_for_listed_features_only():
    results = evaluate()
    assert results["package"].files == 23 and results["proxy docs"].files >= 370
    for name, tally in results.items():
        assert not tally.unknown_keys, f"{name}: keys missing from the compatibility table: {tally.unknown_keys}"
    docs = results["proxy docs"]
    assert (docs.load + docs.features_only) / docs.files >= 0.9
    package = results["package"]
    assert package.load + package.features_only == package.files
    assert DOC.read_text().endswith(render_section(results)), (
        "docs/litellm-compatibility.md is stale: run `PYTHONPATH=shared:tests python -m harness.litellm_corpus`"
    )
    assert MARKER in DOC.read_text()
