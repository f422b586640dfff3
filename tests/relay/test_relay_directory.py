"""The relay's handshake cache over a real store: what it answers from memory, and when it
asks the database again."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harmone.relay.directory import DirectoryCache, StoreDirectory
from harmone.store import Store


class CountingDirectory:
    """The real `StoreDirectory`, counting the look-ups that reach the database."""

    def __init__(self, store: Store) -> None:
        self.inner = StoreDirectory(store)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


async def test_handshakes_are_answered_from_memory_until_something_changes(store: Store) -> None:
    site = await store.sites.create("Depot", "cloud", cpms_url="ws://cpms.example/ocpp")
    await store.chargers.register(site.uid, "CP-1")
    await store.chargers.update(site.uid, "CP-1", cpms_url="ws://own.example/ocpp")
    directory = CountingDirectory(store)
    now = [100.0]
    cache = DirectoryCache(directory, lambda: now[0], ttl=300, negative_ttl=5)  # type: ignore[arg-type]
    await cache.warm()
    directory.calls.clear()

    # a restart's reconnect storm: nothing reaches the database
    assert (await cache.site(site.uid)) == site
    assert (await cache.route(site.uid, "CP-1")).cpms_url == "ws://own.example/ocpp"
    assert not (await cache.route(site.uid, "CP-NEW")).known  # the site's chargers are all known
    assert directory.calls == Counter()

    # a change made through the store is seen once the relay is told about it
    await store.sites.update(site.uid, cpms_url="ws://other.example/ocpp")
    cache.site_changed(site.uid)
    assert (await cache.site(site.uid)).cpms_url == "ws://other.example/ocpp"  # type: ignore[union-attr]
    assert directory.calls["find_site"] == 1
    await store.chargers.update(site.uid, "CP-1", cpms_url=None)
    cache.charger_changed(site.uid, "CP-1")
    assert (await cache.route(site.uid, "CP-1")).cpms_url is None
    assert directory.calls["find_charger"] == 1

    # an unknown site is asked for again only after the negative TTL
    assert await cache.site("nope") is None
    assert await cache.site("nope") is None
    assert directory.calls["find_site"] == 2
    now[0] += 6
    created = await store.sites.create("Late", "cloud")
    assert await cache.site("nope") is None
    assert directory.calls["find_site"] == 3

    # and anything cached expires after the TTL, in case a change went around the relay
    now[0] += 301
    assert (await cache.site(created.uid)) == created
    assert (await cache.site(site.uid)).cpms_url == "ws://other.example/ocpp"  # type: ignore[union-attr]
    assert directory.calls["find_site"] == 5
