"""Data beside the room graph: receipts and read markers, typing, presence, room tags
and the user directory. Each feature is a handler (deciding) and, where it reaches
/sync, a ``SyncSource`` (reading)."""
