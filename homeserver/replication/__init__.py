"""The internal HTTP API between processes (Synapse's "replication HTTP").

One instance asks another to do something synchronously: a client write received by a
worker that does not write the stream is forwarded to the instance that does. Served
under ``/_synapse/replication/<name>/<params...>[/<txn_id>]`` on listeners with the
``replication`` resource (``server``), called through ``InternalClient`` (``client``);
``endpoints`` holds the wire contract both sides share.
"""
