"""Masking for display: values whose names look like credentials never reach a page.

Pure functions. A header, JSON field or query parameter named like a password, token,
secret, API key, cookie or authorization is shown as `MASK`, at any depth; a password
inside a URL (`scheme://user:password@host`) is masked wherever it appears in text.
"""

import re
from collections.abc import Mapping
from typing import Final

from service.engine.model import Json

MASK: Final = "••••••"
SECRET_NAME: Final = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_ ]?key|authori[sz]|authentic"
    r"|credential|cookie|session|private[-_ ]?key|signature"
    r"|(?<![a-z])(auth|pin|cvv|ssn)(?![a-z])",
    re.IGNORECASE,
)
_URL_PASSWORD: Final = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@")


def is_secret_name(name: str) -> bool:
    """Whether a header or field called `name` is masked."""
    return SECRET_NAME.search(name) is not None


def mask_text(text: str) -> str:
    """`text` with any password inside a URL masked."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def mask_json(value: Json) -> Json:
    """A copy of `value` with every credential-named field masked, at any depth."""
    match value:
        case dict():
            return {
                key: MASK if is_secret_name(key) else mask_json(item)
                for key, item in value.items()
            }
        case list():
            return [mask_json(item) for item in value]
        case str():
            return mask_text(value)
        case _:
            return value


def mask_mapping(values: Mapping[str, Json]) -> dict[str, Json]:
    """Headers or inputs: credential-named entries masked, the rest masked within."""
    return {
        name: MASK if is_secret_name(name) else mask_json(value)
        for name, value in values.items()
    }
