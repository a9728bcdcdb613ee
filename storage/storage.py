"""The composition of every store over one database."""

from __future__ import annotations

from dataclasses import dataclass

from storage.account_data import AccountDataStore
from storage.database import Database
from storage.events import EventsStore
from storage.id_generator import IdGenerator
from storage.migrations import prepare_database
from storage.profiles import ProfileStore
from storage.registration import RegistrationStore
from storage.users import UserStore


@dataclass
class Storage:
    db: Database
    users: UserStore
    profiles: ProfileStore
    account_data: AccountDataStore
    registration: RegistrationStore
    events: EventsStore

    @classmethod
    async def open(cls, db: Database) -> Storage:
        """Apply migrations, then build the stores with their id generators."""
        await prepare_database(db)
        token_ids = IdGenerator(
            max(
                (await IdGenerator.load(db, "access_tokens", "id")).current_position,
                (await IdGenerator.load(db, "refresh_tokens", "id")).current_position,
            )
        )
        account_data_stream = await IdGenerator.load(db, "account_data", "stream_id")
        events_stream = await IdGenerator.load(db, "events", "stream_ordering")
        state_groups = await IdGenerator.load(db, "state_groups", "id")
        return cls(
            db=db,
            users=UserStore(db, token_ids),
            profiles=ProfileStore(db),
            account_data=AccountDataStore(db, account_data_stream),
            registration=RegistrationStore(db),
            events=EventsStore(db, events_stream, state_groups),
        )
