"""LiteLLM's own configs (tests/data/litellm_corpus: the example files of its package and the config blocks of its
docs) through RouteIQ's config check, classified; and the section of docs/litellm-compatibility.md that reports
it. Regenerate that section with `PYTHONPATH=shared:tests .venv/bin/python -m harness.litellm_corpus`.

A docs block without `model_list` is a fragment showing one section: it is checked inside a minimal config (one
OpenAI deployment), as a user would paste it into theirs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from routeiq_shared.config_schema import ConfigError, check_config_report
from routeiq_shared.litellm_compat import CORPUS_MARKER, SECTIONS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "litellm_corpus"
DOC = ROOT / "docs" / "litellm-compatibility.md"
MARKER = CORPUS_MARKER
FEATURE = "a LiteLLM feature RouteIQ does not support: "
BASE_MODEL = {
    "model_name": "base",
    "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"},
}
GROUPS = (
    ("package", "LiteLLM's example configs (its package's `proxy/example_config_yaml/`)", "package/*.yaml"),
    ("proxy docs", "config blocks of LiteLLM's proxy docs (`docs/proxy/**`)", "docs/proxy.*.yaml"),
    ("other docs", "config blocks of its provider, caching and routing pages", "docs/*.yaml"),
)


@dataclass
class Tally:
    files: int = 0
    load: int = 0
    features_only: int = 0  # refused, every reason a LiteLLM feature the table lists as not supported
    other: int = 0
    unknown_keys: Counter[str] = field(default_factory=Counter)
    features: Counter[str] = field(default_factory=Counter)
    other_reasons: Counter[str] = field(default_factory=Counter)


def check_block(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """("load" | "features" | "other", the problems)."""
    data = yaml.safe_load(raw)
    if isinstance(data, dict) and "model_list" not in data:
        raw = yaml.safe_dump({"model_list": [BASE_MODEL], **data}, sort_keys=False).encode()
    try:
        check_config_report(raw)
    except ConfigError as exc:
        others = [(p, m) for p, m in exc.problems if not m.startswith(FEATURE)]
        return ("other" if others else "features"), list(exc.problems)
    return "load", []


def evaluate() -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for name, _, pattern in GROUPS:
        tally = out[name] = Tally()
        for path in sorted(CORPUS.glob(pattern)):
            if name == "other docs" and path.name.startswith("proxy."):
                continue
            tally.files += 1
            verdict, problems = check_block(path.read_bytes())
            if verdict == "load":
                tally.load += 1
            elif verdict == "features":
                tally.features_only += 1
            else:
                tally.other += 1
            for key, message in problems:
                if message.startswith(FEATURE):
                    tally.features[message[len(FEATURE) :].split(" (")[0]] += 1
                elif message == "unknown key" and (key.split(".")[0] in SECTIONS or "." not in key):
                    tally.unknown_keys[key] += 1  # a LiteLLM setting the compatibility table does not know
                    tally.other_reasons["unknown key"] += 1
                elif message == "unknown key":
                    tally.other_reasons["a model_list entry with keys outside litellm_params (a malformed block)"] += 1
                else:
                    tally.other_reasons[message.split(";")[0][:90]] += 1
    return out


def render_section(results: dict[str, Tally]) -> str:
    lines = [
        MARKER,
        "Run by `tests/unit/test_litellm_corpus.py` over `tests/data/litellm_corpus/` (its `SOURCES.md` says where",
        "each file comes from). A file *loads* when RouteIQ's config check accepts it; *refused for features* when",
        "every problem is a LiteLLM feature this table lists as not supported; *other* when something else is",
        "wrong (a placeholder such as `api_base: <your-api-base>`, a fallback naming a model the block does not",
        "define, a master key shorter than 8 characters).",
        "",
        "| configs | files | load | refused for features | other | load or refused for features |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, title, _ in GROUPS:
        t = results[name]
        share = (t.load + t.features_only) / t.files if t.files else 0.0
        lines.append(f"| {title} | {t.files} | {t.load} | {t.features_only} | {t.other} | {share:.1%} |")
    features: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for t in results.values():
        features.update(t.features)
        reasons.update(t.other_reasons)
    lines += ["", "The features refused most often (problems, over all files):", ""]
    lines += [f"- {what}: {n}" for what, n in features.most_common(12)]
    lines += ["", "Every *other* reason (problems, over all files):", ""]
    lines += [f"- {what}: {n}" for what, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = DOC.read_text()
    head = text.split(MARKER)[0].rstrip("\n") + "\n"
    DOC.write_text(head + render_section(evaluate()))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
