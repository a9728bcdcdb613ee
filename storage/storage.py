"""The composition of every store over one database."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.bus import Bus, LocalBus
from storage.account_data import AccountDataStore
from storage.admin_jobs import AdminJobsStore
from storage.aliases import AliasStore
from storage.appservice import AppServiceStore
from storage.database import Database, Transaction
from storage.device_federation import DeviceFederationStore
from storage.e2ee import E2eeStore
from storage.events import EventsStore
from storage.federation import FederationStore
from storage.filters import FilterStore
from storage.id_generator import IdGenerator
from storage.key_backup import KeyBackupStore
from storage.login_tokens import LoginTokenStore
from storage.media import MediaStore
from storage.media_admin import MediaAdminStore
from storage.memberships import MembershipStore
from storage.migrations import prepare_database
from storage.openid import OpenIdStore
from storage.presence import PresenceStore
from storage.profiles import ProfileStore
from storage.purge import PurgeStore
from storage.push import PushStore
from storage.receipts import ReceiptsStore
from storage.registration import RegistrationStore
from storage.relations import RelationsStore
from storage.reports import ReportsStore
from storage.room_directory import RoomDirectoryStore
from storage.room_stats import RoomStatsStore
from storage.rooms import RoomsStore
from storage.search import SearchStore
from storage.sliding_sync import SlidingSyncStore
from storage.state_groups import StateGroupStore
from storage.threepids import ThreePidStore, ValidationSessionStore
from storage.user_admin import UserAdminStore
from storage.user_directory import UserDirectoryStore
from storage.user_restrictions import UserRestrictionsStore
from storage.users import UserStore


@dataclass
class Storage:
    db: Database
    users: UserStore
    profiles: ProfileStore
    account_data: AccountDataStore
    registration: RegistrationStore
    events: EventsStore
    state_groups: StateGroupStore
    memberships: MembershipStore
    rooms: RoomsStore
    aliases: AliasStore
    room_directory: RoomDirectoryStore
    filters: FilterStore
    e2ee: E2eeStore
    device_federation: DeviceFederationStore
    key_backup: KeyBackupStore
    search: SearchStore
    receipts: ReceiptsStore
    presence: PresenceStore
    user_directory: UserDirectoryStore
    media: MediaStore
    media_admin: MediaAdminStore
    appservice: AppServiceStore
    federation: FederationStore
    relations: RelationsStore
    push: PushStore
    reports: ReportsStore
    room_stats: RoomStatsStore
    openid: OpenIdStore
    login_tokens: LoginTokenStore
    user_restrictions: UserRestrictionsStore
    threepids: ThreePidStore
    validation_sessions: ValidationSessionStore
    user_admin: UserAdminStore
    admin_jobs: AdminJobsStore
    purge: PurgeStore
    sliding_sync: SlidingSyncStore

    @classmethod
    async def open(cls, db: Database, bus: Bus | None = None) -> Storage:
        """Apply migrations, then build the stores with their id generators.

        The stores publish their changes on ``bus`` (a private ``LocalBus`` by default:
        tools and tests that open a database without a server)."""
        if bus is None:
            bus = LocalBus()
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
        receipts_stream = await IdGenerator.load(db, "receipts", "stream_id")
        presence_stream = await IdGenerator.load(db, "presence", "stream_id")
        e2ee = await E2eeStore.open(db)

        def _min_stream(txn: Transaction) -> int:
            row = txn.select_one("SELECT MIN(stream_ordering) FROM events")
            return int(row[0]) if row and row[0] is not None else 0

        backfill_floor = await db.run_interaction("min_events_stream", _min_stream)
        federation = FederationStore(db, await IdGenerator.load(db, "federation_outbox", "id"))
        aliases = AliasStore(db, bus)
        return cls(
            db=db,
            users=UserStore(db, token_ids, bus),
            profiles=ProfileStore(db),
            account_data=AccountDataStore(db, account_data_stream, bus),
            registration=RegistrationStore(db),
            events=EventsStore(db, events_stream, backfill_floor, federation),
            state_groups=StateGroupStore(db, state_groups),
            memberships=MembershipStore(db),
            rooms=RoomsStore(db),
            aliases=aliases,
            room_directory=RoomDirectoryStore(db, aliases),
            filters=FilterStore(db),
            e2ee=e2ee,
            device_federation=await DeviceFederationStore.open(db, e2ee),
            key_backup=await KeyBackupStore.open(db),
            search=SearchStore(db),
            receipts=ReceiptsStore(db, receipts_stream, bus),
            presence=PresenceStore(db, presence_stream),
            user_directory=UserDirectoryStore(db),
            media=MediaStore(db),
            media_admin=MediaAdminStore(db),
            appservice=AppServiceStore(db),
            federation=federation,
            relations=RelationsStore(db),
            push=PushStore(db),
            reports=await ReportsStore.open(db),
            room_stats=RoomStatsStore(db),
            openid=OpenIdStore(db),
            login_tokens=LoginTokenStore(db),
            user_restrictions=UserRestrictionsStore(db),
            threepids=ThreePidStore(db),
            validation_sessions=ValidationSessionStore(db),
            user_admin=UserAdminStore(db),
            admin_jobs=AdminJobsStore(db),
            purge=PurgeStore(db),
            sliding_sync=await SlidingSyncStore.open(db),
        )
