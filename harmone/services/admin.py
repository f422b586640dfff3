"""The administrative commands `harmone init` and `harmone token create`.

Both open the database, do one thing, and close it again; errors are HarmoneError subclasses
with a message meant for the operator (the CLI prints it and exits 2).
"""

from __future__ import annotations

import logging
import sys

from harmone.errors import StoreError
from harmone.services.accounts import Accounts, check_password
from harmone.store.store import Store

__all__ = ["create_token", "init_database"]

log = logging.getLogger(__name__)


async def init_database(db_url: str, email: str, password: str) -> int:
    """Create or migrate the schema and make sure the admin `email` exists.

    Running it again is harmless: the schema is already current and an existing user
    (whatever its password or role) is left as it is. Returns the exit status.
    """
    # Check the input before touching the database, so a typo does not half-initialise it.
    check_password(password)
    store = await Store.open(db_url)
    try:
        await store.migrate()
        user, created = await Accounts(store).ensure_admin(email, password)
    finally:
        await store.close()
    if created:
        print(f"harmone: admin user {user.email} created", file=sys.stderr)
    else:
        print(
            f"harmone: user {user.email} already present ({user.role}), left unchanged",
            file=sys.stderr,
        )
    return 0


async def create_token(db_url: str, email: str) -> int:
    """Print a new API token for `email` on stdout (one line, nothing else).

    NotFound (a HarmoneError) if there is no such user. Returns the exit status.
    """
    store = await Store.open(db_url)
    try:
        if not await store.is_migrated():
            raise StoreError(
                "the database has no current HARMON-E schema: run `harmone init` first"
            )
        token = await Accounts(store).create_token(email)
    finally:
        await store.close()
    print(token, flush=True)
    return 0
