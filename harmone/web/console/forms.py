"""Reading HTML forms into the REST API's validated bodies, with per-field messages."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

__all__ = ["FormErrors", "field", "validate"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
FormErrors = dict[str, str]


def field(form: FormData, name: str) -> str:
    """A text field, stripped; "" when absent (or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def validate(model: type[M], values: dict[str, object]) -> tuple[M | None, FormErrors]:
    """The model, or the messages to show next to each field."""
    try:
        return model.model_validate(values), {}
    except ValidationError as exc:
        errors: FormErrors = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "form"
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            errors.setdefault(name, message[:1].upper() + message[1:])
        return None, errors
