"""The model registry: a YAML file of named models, kept apart from the run configuration.

In the spirit of litellm's ``model_list`` but with our explicit ModelSpec fields::

    models:
      gpt4o-mini:
        model: openai/gpt-4o-mini
        api_key: os.environ/OPENAI_API_KEY   # read from the environment at load time
        rpm: 500
        budgets:
          large: {max_tokens: 1024}

An ``os.environ/NAME`` key whose variable is unset loads as None (the key is only needed when
the model is called); ``check_credentials`` then refuses the models a run actually uses.
models.example.yaml at the repo root shows one entry per kind of provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sleeptime.model._spec import ModelSpec

TOP_LEVEL_KEYS = frozenset({"models"})


class MissingCredentialsError(ValueError):
    """A model a run uses reads its key from an environment variable that is not set."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key repeated in one mapping is an error, not a silent overwrite."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is repeated", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_registry(path: str | Path) -> dict[str, ModelSpec]:
    """Read and validate a model registry file; errors name the file and the entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model registry not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping with a 'models' key")
    unknown = sorted(map(str, set(data) - TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown}; expected only 'models'")
    entries = data.get("models")
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: 'models' must be a mapping of model name -> settings")

    specs: dict[str, ModelSpec] = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{path}: model names must be non-empty strings, got {name!r}")
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: model {name!r}: expected a mapping of settings, got {type(entry).__name__}")
        try:
            specs[name] = ModelSpec.model_validate(entry)
        except ValidationError as exc:
            raise ValueError(f"{path}: model {name!r}: {_describe(exc)}") from None
    return specs


def check_credentials(specs: Mapping[str, ModelSpec], names: Iterable[str]) -> None:
    """Refuse to go on if a model in ``names`` reads its key from an unset environment variable.

    Call it with the models a run will actually call (sleep and test model): a registry may list
    many more, and only the used ones need keys.
    """
    problems = []
    for name in dict.fromkeys(names):
        if name not in specs:
            raise KeyError(f"unknown model {name!r}; configured: {sorted(specs)}")
        var = specs[name].missing_key
        if var is not None:
            problems.append(f"model {name!r} ({specs[name].model}) needs the environment variable {var} (its api_key)")
    if problems:
        raise MissingCredentialsError(
            "; ".join(problems) + ": it was not set when the configuration was loaded. Export it and run again."
        )


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
