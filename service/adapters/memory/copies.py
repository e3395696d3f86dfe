"""Copies of JSON values, so that no caller of an in-process store shares its state."""

from collections.abc import Mapping

from service.engine.model import Json


def copied(value: Json) -> Json:
    """A deep copy of a JSON value: the caller's later edits never reach the store."""
    if isinstance(value, dict):
        return {key: copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copied(item) for item in value]
    return value


def copied_mapping(values: Mapping[str, Json]) -> dict[str, Json]:
    return {key: copied(item) for key, item in values.items()}
