"""Wildcard model names, served as LiteLLM serves them: a `model_name` with `*` (`openai/*`, `anthropic/claude-*`,
`*`) answers any requested model it matches, and the `*` of its `litellm_params.model` is filled with what the
request's name matched (`openai/*` asked for `openai/gpt-4o` calls `openai/gpt-4o`; `*` → `openai/*` asked for
`gpt-4o` calls `openai/gpt-4o`). An exact model name always wins; among patterns, the most specific (longest
literal text) wins, then the first in config.

The concrete groups are made on first use and kept in a bounded cache owned by the serving state (a reload builds
a new one), so a client cycling through names cannot grow memory; metrics label such requests with the pattern,
not the requested name, for the same reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Iterable

from routeiq_gateway.routing.deployments import Deployment, deployment_id, split_provider

CACHE_SIZE = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    templates: tuple[Deployment, ...]

    @property
    def specificity(self) -> int:
        return len(self.name.replace("*", ""))


def is_wildcard(model_name: str) -> bool:
    return "*" in model_name


def _regex(model_name: str) -> re.Pattern[str]:
    return re.compile("^" + "(.*)".join(re.escape(part) for part in model_name.split("*")) + "$", re.DOTALL)


def _concrete(template: Deployment, requested: str, parts: tuple[str, ...]) -> Deployment:
    filled = template.litellm_model
    if "*" in filled:
        # one capture per `*`: fill the model's wildcards in order; a single `*` takes everything matched
        captured = list(parts) if filled.count("*") == len(parts) else ["".join(parts)]
        for value in captured:
            filled = filled.replace("*", value, 1)
    _, upstream = split_provider(filled)
    return dataclasses.replace(
        template,
        model_name=requested,
        litellm_model=filled,
        upstream_model=upstream,
        id=deployment_id(requested, filled, template.api_base),
    )


class WildcardGroups:
    def __init__(self, groups: Iterable[tuple[str, tuple[Deployment, ...]]]) -> None:
        patterns = [Pattern(name, _regex(name), deps) for name, deps in groups]
        # most specific first; sorted() is stable, so config order breaks ties
        self.patterns = tuple(sorted(patterns, key=lambda p: -p.specificity))
        self._cache: OrderedDict[str, tuple[Pattern, tuple[Deployment, ...]]] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def resolve(self, requested: str) -> tuple[Pattern, tuple[Deployment, ...]] | None:
        hit = self._cache.get(requested)
        if hit is not None:
            self._cache.move_to_end(requested)
            return hit
        for pattern in self.patterns:
            match = pattern.regex.match(requested)
            if match is not None:
                deps = tuple(_concrete(t, requested, match.groups()) for t in pattern.templates)
                self._cache[requested] = (pattern, deps)
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
                return pattern, deps
        return None
