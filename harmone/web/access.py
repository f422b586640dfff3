"""Who may do what: roles and site restrictions, shared by the REST API and the console.

Rules (docs/console.md); a refusal is `harmone.errors.Forbidden` (HTTP 403):

* ``admin``: everything, including users; always sees every site.
* ``operator``: reads, and creates / edits / deletes sites and chargers.
* ``viewer``: reads only.
* An operator or viewer may be limited to some sites: any other site does not exist for them
  (it is missing from lists, and asking for it answers 404 exactly like an unknown UID, so
  that a restricted user cannot even learn that it exists). A restricted user may not
  create sites: a new site would be invisible to its creator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from harmone.errors import Forbidden, NotFound
from harmone.store.records import Role, Site, SiteScope, User, UserAccount

__all__ = ["ROLE_DESCRIPTIONS", "Access"]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Site)

#: One line per role, as the users page explains them.
ROLE_DESCRIPTIONS: dict[Role, str] = {
    "admin": "everything, including users; always sees every site",
    "operator": "creates and edits sites and charging stations",
    "viewer": "reads only",
}


@dataclass(frozen=True, slots=True)
class Access:
    """A signed-in user (API token or console session) and what they may touch."""

    user: User
    sites: SiteScope

    @classmethod
    def of(cls, account: UserAccount) -> Access:
        return cls(account.user, None if account.user.role == "admin" else account.sites)

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def can_write(self) -> bool:
        """Operators and admins change sites and chargers."""
        return self.user.role in ("admin", "operator")

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    @property
    def restricted(self) -> bool:
        return self.sites is not None

    @property
    def can_create_sites(self) -> bool:
        return self.can_write and not self.restricted

    def sees(self, site_uid: str) -> bool:
        return self.sites is None or site_uid in self.sites

    def check_site(self, site_uid: str) -> None:
        """NotFound (the same words as for an unknown UID) for a site outside the scope."""
        if not self.sees(site_uid):
            raise NotFound(f"no site {site_uid!r}")

    def visible(self, sites: Iterable[S]) -> list[S]:
        return [s for s in sites if self.sees(s.uid)]

    def require_writer(self) -> None:
        if not self.can_write:
            raise Forbidden(
                f"a {self.user.role} may only read; ask an admin or operator to make this change"
            )

    def require_site_creator(self) -> None:
        self.require_writer()
        if self.restricted:
            raise Forbidden(
                "you are limited to some sites and cannot create new ones; ask an admin"
            )

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden(f"only an admin may do this (you are a {self.user.role})")
