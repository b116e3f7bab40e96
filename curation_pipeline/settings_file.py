"""The settings file of ``curate run --config`` and of the code location (``CURATION_SETTINGS``): which resource
gets which settings. Plain YAML reading, no resource classes: the CLI reads it before importing them."""

from __future__ import annotations

SETTINGS_FILE_ENV = "CURATION_SETTINGS"  # the code location's settings file
RESOURCE_KEYS = ("scoring", "rewriter", "policy", "compute")  # the resources a settings file configures


def read_settings_file(path: str) -> dict[str, dict]:
    """Resource -> settings from a YAML file: ``{policy: {keep_threshold: 80}, scoring: {...}}`` or a Dagster run
    config's ``resources:`` section; ValueError naming the file and what is wrong in it."""
    import yaml

    settings: dict[str, dict] = {key: {} for key in RESOURCE_KEYS}
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from exc
    if isinstance(data, dict) and "resources" in data:  # a run config's: nothing beside it would be read
        _only(path, data, "resources", "the top level", "a run's ops, execution or loggers are not settings")
        data = data["resources"]
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must map resources ({', '.join(RESOURCE_KEYS)}) to settings")
    for resource, values in data.items():
        if isinstance(values, dict) and "config" in values:
            _only(path, values, "config", repr(resource), "its settings go under config:")
            values = values["config"]
        if resource not in RESOURCE_KEYS:
            raise ValueError(f"config file {path}: {resource!r} is not one of {', '.join(RESOURCE_KEYS)}")
        if not isinstance(values, dict):
            raise ValueError(f"config file {path}: {resource!r} must map its settings to values "
                             f"(got {type(values).__name__} {values!r})")
        settings[resource].update(values)
    return settings


def _only(path: str, data: dict, key: str, where: str, why: str) -> None:
    """``key`` must be alone in ``data``: what is beside it would be dropped without a word."""
    beside = [k for k in data if k != key]
    if beside:
        raise ValueError(f"config file {path}: {', '.join(map(repr, beside))} beside {key}: in {where} is not read "
                         f"({why}); move it under {key}: or remove it")
