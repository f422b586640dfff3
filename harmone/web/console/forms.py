"""Reading HTML forms, and showing a service's refusal next to the field it concerns."""

from __future__ import annotations

import logging
from collections.abc import Collection

from starlette.datastructures import FormData

from harmone.errors import ConfigError, InvalidFields

__all__ = ["FormErrors", "field", "form_errors"]

log = logging.getLogger(__name__)

#: Message per form field; "form" for a message about the whole form.
FormErrors = dict[str, str]


def field(form: FormData, name: str) -> str:
    """A text field, stripped; "" when absent (or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


def form_errors(exc: ConfigError, shown: Collection[str]) -> FormErrors:
    """The messages to show next to each of the `shown` fields (InvalidFields), and above
    the form for anything else."""
    if not isinstance(exc, InvalidFields):
        return {"form": _sentence(str(exc))}
    errors: FormErrors = {}
    others = []
    for name, problem in exc.fields.items():
        if name in shown:
            errors[name] = _sentence(problem)
        else:
            others.append(f"{name}: {problem}")
    if others:
        errors["form"] = _sentence("; ".join(others))
    return errors
