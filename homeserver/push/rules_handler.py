"""Each user's push rules: a memory cache over ``storage.push`` and the ``m.push_rules``
account data clients read them from.

Invariants:
- The cache holds ``PushRuleSet`` objects that are never mutated once cached: a change
  is applied to a fresh copy, stored, then swapped in (so an evaluation running
  concurrently sees either the old or the new rules, never half of a change).
- Changes of one user are serialised (read, modify, store, publish).
- After every change the user's ``m.push_rules`` global account data is rewritten with
  the full rule set, which wakes their syncs; ``ensure_account_data`` (a sync hook)
  writes it once per process before a user's first sync when it is missing or stale
  (server defaults may change between versions), so an initial sync always has it.
- Loading many users' rules (every member of a room) is one query for those not cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from homeserver.ephemeral.locks import KeyedLock
from homeserver.push.rules import PushRuleSet
from storage.storage import Storage

PUSH_RULES_TYPE = "m.push_rules"
CACHE_SIZE = 50_000


class PushRulesHandler:
    def __init__(self, storage: Storage, *, cache_size: int = CACHE_SIZE) -> None:
        self._store = storage.push
        self._account_data = storage.account_data
        self._cache: OrderedDict[str, PushRuleSet] = OrderedDict()
        self._cache_size = cache_size
        self._locks = KeyedLock()
        self._published: set[str] = set()

    def _remember(self, user_id: str, ruleset: PushRuleSet) -> None:
        self._cache[user_id] = ruleset
        self._cache.move_to_end(user_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Another process changed the user's rules: the next read loads them."""
        self._cache.pop(user_id, None)

    def cached(self, user_id: str) -> PushRuleSet | None:
        return self._cache.get(user_id)

    async def get_rulesets(self, user_ids: Iterable[str]) -> dict[str, PushRuleSet]:
        wanted = list(dict.fromkeys(user_ids))
        out: dict[str, PushRuleSet] = {}
        missing: list[str] = []
        for user_id in wanted:
            ruleset = self._cache.get(user_id)
            if ruleset is None:
                missing.append(user_id)
            else:
                out[user_id] = ruleset
        if missing:
            stored = await self._store.get_push_rules(missing)
            for user_id in missing:
                # A change may have been swapped in while we read: it wins.
                ruleset = self._cache.get(user_id)
                if ruleset is None:
                    ruleset = PushRuleSet.from_storage_json(user_id, stored.get(user_id))
                    self._remember(user_id, ruleset)
                out[user_id] = ruleset
        return out

    async def get(self, user_id: str) -> PushRuleSet:
        return (await self.get_rulesets([user_id]))[user_id]

    async def change(self, user_id: str, apply: Callable[[PushRuleSet], None]) -> PushRuleSet:
        """Apply ``apply`` (which may raise ``PushRuleError``) to a copy, store, publish."""
        async with self._locks(user_id):
            current = await self.get(user_id)
            updated = PushRuleSet.from_storage_json(user_id, current.to_storage_json())
            apply(updated)
            await self._store.set_push_rules(user_id, updated.to_storage_json())
            self._remember(user_id, updated)
            await self._account_data.put(user_id, "", PUSH_RULES_TYPE, updated.to_client_json())
            self._published.add(user_id)
            return updated

    async def ensure_account_data(self, user_id: str) -> None:
        if user_id in self._published:
            return
        async with self._locks(user_id):
            if user_id in self._published:
                return
            wanted = (await self.get(user_id)).to_client_json()
            if await self._account_data.get(user_id, "", PUSH_RULES_TYPE) != wanted:
                await self._account_data.put(user_id, "", PUSH_RULES_TYPE, wanted)
            self._published.add(user_id)

    async def sync_hook(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> Callable[[], None]:
        await self.ensure_account_data(user_id)
        return _nothing


def _nothing() -> None:
    return None
