"""Every SQL statement litedurable runs on an SQLite journal, by name (and the schema).

Layout (schema version in ``PRAGMA user_version``, ``application_id`` = ``LDUR``)::

    workflows(workflow_id PK, name, status, inputs, output, error, checksum, created_at,
              updated_at, app_version, parent_id, owner, recovery_attempts, progress_mark,
              deadline, detached)
    steps(workflow_id, step, kind, name, output, error, extra, checksum, started_at,
          finished_at)  PK (workflow_id, step), WITHOUT ROWID
    owners(owner PK, host, pid, heartbeat, lease, pid_namespace)    (the last two: schema 3)
    schedules(name PK, workflow, cron, tz, catch_up, paused, last_fire, created_at,
              updated_at)                                        (schema 2)
    messages(seq PK, destination, topic, payload, checksum, sender, key, created_at,
             consumed_step, consumed_at)                         (schema 5)
    events(workflow_id, key, value, checksum, updated_at)  PK (workflow_id, key)
    streams(workflow_id, key, position, value, checksum, created_at)
            PK (workflow_id, key, position); a NULL value closes the stream
    promises(promise_id PK, workflow_id, step, output, error, checksum, created_at,
             settled_at)
    workflows += queue, priority, dedup_key, partition_key, timeout, dequeued_at  (schema 6)
    queues(name PK, concurrency, worker_concurrency, rate_limit, rate_period, partitioned,
           updated_at)                                           (schema 6)
    queue_starts(queue, started_at)   each dequeue, kept for the longest window (schema 6)
    steps += site, attempts, owner     where it was called, failed attempts, who wrote it (7)

Statements are module constants so the whole vocabulary can be read (and reviewed for its
indexes) in one place; ``storage.py`` only binds parameters.
"""

from __future__ import annotations

import functools

APPLICATION_ID = 0x4C445552  # "LDUR"

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE workflows (
        workflow_id       TEXT PRIMARY KEY,
        name              TEXT NOT NULL,
        status            TEXT NOT NULL,
        inputs            BLOB NOT NULL,
        output            BLOB,
        error             BLOB,
        checksum          INTEGER NOT NULL,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL,
        app_version       TEXT NOT NULL,
        parent_id         TEXT,
        owner             TEXT,
        recovery_attempts INTEGER NOT NULL DEFAULT 0,
        progress_mark     INTEGER NOT NULL DEFAULT -1,
        deadline          REAL,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        detached          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX workflows_by_status ON workflows(status, app_version);
    CREATE INDEX workflows_by_created ON workflows(created_at);
    CREATE INDEX workflows_by_parent ON workflows(parent_id) WHERE parent_id IS NOT NULL;
    CREATE TABLE steps (
        workflow_id TEXT NOT NULL,
        step        INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        output      BLOB,
        error       BLOB,
        extra       BLOB,
        checksum    INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        PRIMARY KEY (workflow_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE owners (
        owner     TEXT PRIMARY KEY,
        host      TEXT NOT NULL,
        pid       INTEGER NOT NULL,
        heartbeat REAL NOT NULL
    );
    """,
    """
    CREATE TABLE schedules (
        name       TEXT PRIMARY KEY,
        workflow   TEXT NOT NULL,
        cron       TEXT NOT NULL,
        tz         TEXT,
        catch_up   INTEGER NOT NULL,
        paused     INTEGER NOT NULL DEFAULT 0,
        last_fire  REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # Each owner states its own lease (judged by it, not by a reader with a shorter one) and
    # its pid namespace (a pid is only checked by a reader in that same namespace). Rows an
    # older litedurable writes leave both NULL: the reader's lease, and no pid check.
    """
    ALTER TABLE owners ADD COLUMN lease REAL;
    ALTER TABLE owners ADD COLUMN pid_namespace TEXT;
    """,
    # ``cancel_requested`` was written by no release: cancellation is the status itself.
    """
    ALTER TABLE workflows DROP COLUMN cancel_requested;
    """,
    # Messages, events, streams and promises. A message is consumed by the step that records
    # it (``consumed_step``), in the same transaction; ``seq`` orders each mailbox (FIFO).
    """
    CREATE TABLE messages (
        seq           INTEGER PRIMARY KEY,
        destination   TEXT NOT NULL,
        topic         TEXT NOT NULL,
        payload       BLOB NOT NULL,
        checksum      INTEGER NOT NULL,
        sender        TEXT,
        key           TEXT,
        created_at    REAL NOT NULL,
        consumed_step INTEGER,
        consumed_at   REAL
    );
    CREATE INDEX messages_unread ON messages(destination, topic, seq)
        WHERE consumed_step IS NULL;
    CREATE INDEX messages_by_destination ON messages(destination, seq);
    CREATE UNIQUE INDEX messages_by_key ON messages(destination, key) WHERE key IS NOT NULL;
    CREATE TABLE events (
        workflow_id TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       BLOB NOT NULL,
        checksum    INTEGER NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (workflow_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE streams (
        workflow_id TEXT NOT NULL,
        key         TEXT NOT NULL,
        position    INTEGER NOT NULL,
        value       BLOB,
        checksum    INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (workflow_id, key, position)
    ) WITHOUT ROWID;
    CREATE TABLE promises (
        promise_id  TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL,
        step        INTEGER NOT NULL,
        output      BLOB,
        error       BLOB,
        checksum    INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        settled_at  REAL
    );
    CREATE INDEX promises_by_workflow ON promises(workflow_id);
    """,
    # Queues. An enqueued workflow is a workflows row in status 'enqueued' with no owner; a
    # dequeue makes it pending under its consumer. The partial indexes cost nothing to
    # workflows started outside queues. A dedup key is held while its workflow is enqueued or
    # pending: the unique index is the check, inside the insert.
    """
    ALTER TABLE workflows ADD COLUMN queue TEXT;
    ALTER TABLE workflows ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workflows ADD COLUMN dedup_key TEXT;
    ALTER TABLE workflows ADD COLUMN partition_key TEXT;
    ALTER TABLE workflows ADD COLUMN timeout REAL;
    ALTER TABLE workflows ADD COLUMN dequeued_at REAL;
    CREATE INDEX workflows_by_queue ON workflows(queue, status, priority)
        WHERE queue IS NOT NULL;
    CREATE INDEX workflows_by_partition ON workflows(queue, status, partition_key, priority)
        WHERE partition_key IS NOT NULL;
    CREATE UNIQUE INDEX workflows_by_dedup_key ON workflows(queue, dedup_key)
        WHERE dedup_key IS NOT NULL AND status IN ('enqueued', 'pending');
    CREATE TABLE queues (
        name               TEXT PRIMARY KEY,
        concurrency        INTEGER,
        worker_concurrency INTEGER,
        rate_limit         INTEGER,
        rate_period        REAL,
        partitioned        INTEGER NOT NULL,
        updated_at         REAL NOT NULL
    );
    CREATE TABLE queue_starts (
        queue      TEXT NOT NULL,
        started_at REAL NOT NULL
    );
    CREATE INDEX queue_starts_by_time ON queue_starts(queue, started_at);
    """,
    # What a timeline shows and a NonDeterminismError names: where each journaled call was
    # made (file:line), which owner recorded it, and a retried step's failed attempts. Not
    # covered by the checksum: nothing replays them.
    """
    ALTER TABLE steps ADD COLUMN site TEXT;
    ALTER TABLE steps ADD COLUMN attempts TEXT;
    ALTER TABLE steps ADD COLUMN owner TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
READABLE_FROM = 3
"""The oldest schema every statement here reads as it is, so a read-only open (the CLI's read
commands, which cannot migrate) takes it unmigrated: schema 4 only dropped a column that no
statement names. Raise it when a migration adds or renames something a read needs.
Reads of the tables schema 5 added (messages, events, streams, promises) find nothing in an
older file instead (``SqliteStorage`` checks the file's schema), so a read-only open still
takes a schema 3 or 4 journal."""
MAILBOX_SCHEMA = 5  # the schema that added messages, events, streams and promises
QUEUE_SCHEMA = 6  # the schema that added queues (read-only opens of older files find none)
SITE_SCHEMA = 7  # the schema that added steps.site, attempts, owner (older files read NULLs)


WORKFLOW_COLUMNS = (
    "workflow_id, name, status, inputs, output, error, checksum, created_at, updated_at, "
    "app_version, parent_id, owner, recovery_attempts, deadline, detached"
)
# The workflow bound to the first parameter and its descendants not started detached.
DESCENDANTS = (
    "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT w.workflow_id FROM workflows w "
    "JOIN tree ON w.parent_id = tree.id WHERE w.detached = 0)"
)
# Claim every (workflow_id, expected owner) pair of the JSON array :claims for :new at once.
# ``mark`` is the workflow's highest recorded step, found by one index seek per workflow (the
# min/max optimization needs the bare aggregate, hence coalesce outside the subquery) and
# materialized so both SET terms see the same value. The owner compare-and-swap and the
# pending check sit in the WHERE clause, as in the one-row UPDATE this replaced.
CLAIM = (
    "WITH wanted AS MATERIALIZED ("
    "SELECT value ->> 0 AS id, value ->> 1 AS old, "
    "coalesce((SELECT max(step) FROM steps WHERE steps.workflow_id = value ->> 0), -1) AS mark "
    "FROM json_each(:claims)) "
    "UPDATE workflows SET owner = :new, "
    "recovery_attempts = CASE WHEN progress_mark = wanted.mark "
    "THEN recovery_attempts + 1 ELSE 1 END, "
    "progress_mark = wanted.mark "
    "FROM wanted WHERE workflows.workflow_id = wanted.id AND workflows.owner IS wanted.old "
    "AND workflows.status = 'pending' "
    "RETURNING workflows.workflow_id, workflows.recovery_attempts"
)
STEP_COLUMNS = (
    "workflow_id, step, kind, name, output, error, extra, checksum, started_at, finished_at"
)
ALL_STEP_COLUMNS = f"{STEP_COLUMNS}, site, attempts, owner"
OLD_STEP_COLUMNS = f"{STEP_COLUMNS}, NULL, NULL, NULL"  # read from a file older than SITE_SCHEMA
# A step row, written only while the owner bound last still owns its workflow; a select's open
# row (no finished_at yet) is completed, a finished row is never overwritten.
UPSERT_STEP = (
    "ON CONFLICT(workflow_id, step) DO UPDATE SET output = excluded.output, "
    "error = excluded.error, extra = excluded.extra, checksum = excluded.checksum, "
    "finished_at = excluded.finished_at, attempts = excluded.attempts, "
    "owner = excluded.owner WHERE steps.finished_at IS NULL"
)
# Parameters: the 10 checksummed columns, the fence (workflow id, owner: also the row's owner
# column), then the call site and the failed attempts.
INSERT_STEP = (
    f"INSERT INTO steps ({ALL_STEP_COLUMNS}) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?13, ?14, ?12 "
    f"WHERE EXISTS (SELECT 1 FROM workflows WHERE workflow_id = ?11 AND owner = ?12) "
    f"{UPSERT_STEP}"
)
STEP_ROW_WIDTH = 14  # the 10 columns, the fence (workflow id, owner), site, attempts
# Many rows in one statement, padded to a bucket size so a handful of statements stay prepared
# (a padding row has a NULL workflow id, so its fence fails and it is never written).
STEP_ROW_BUCKETS = (2, 4, 8, 16, 32, 64, 128, 256)
ROWS_PER_INSERT = STEP_ROW_BUCKETS[-1]


@functools.cache
def insert_steps_sql(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * STEP_ROW_WIDTH) + ")"] * rows)
    columns = ", ".join(f"column{i}" for i in (*range(1, 11), 13, 14, 12))
    return (
        f"INSERT INTO steps ({ALL_STEP_COLUMNS}) SELECT {columns} FROM (VALUES {values}) "
        "WHERE EXISTS (SELECT 1 FROM workflows WHERE workflow_id = column11 "
        f"AND owner = column12) {UPSERT_STEP}"
    )


# -- workflows ----------------------------------------------------------------------------

SELECT_WORKFLOW = f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = ?"
INSERT_WORKFLOW = (
    "INSERT OR IGNORE INTO workflows (workflow_id, name, status, inputs, checksum, "
    "created_at, updated_at, app_version, parent_id, owner, deadline, detached) "
    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ENQUEUED = (
    "INSERT OR IGNORE INTO workflows (workflow_id, name, status, inputs, checksum, "
    "created_at, updated_at, app_version, parent_id, owner, deadline, detached, queue, "
    "priority, dedup_key, partition_key, timeout) "
    "VALUES (?, ?, 'enqueued', ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)"
)
DEDUP_HOLDER = (
    "SELECT workflow_id FROM workflows WHERE queue = ? AND dedup_key = ? "
    "AND status IN ('enqueued', 'pending')"
)
# Fenced on the owner when one is given; only a pending workflow takes an outcome.
FINISH_KNOWN_WORKFLOW = (
    "UPDATE workflows SET status = ?, output = ?, error = ?, checksum = ?, "
    "updated_at = ? WHERE workflow_id = ? AND status = 'pending' "
    "AND (? IS NULL OR owner = ?)"
)
# The owner stays: go steps that lost a select may still record their outcome.
FINISH_WORKFLOW = (
    "UPDATE workflows SET status = ?, output = ?, error = ?, checksum = ?, "
    "updated_at = ? WHERE workflow_id = ?"
)
SET_APP_VERSION = "UPDATE workflows SET app_version = ?, updated_at = ? WHERE workflow_id = ?"
# The descendants cancelled by the same recorded cancellation as the workflow bound first.
CANCELLED_WITH = (
    f"{DESCENDANTS} SELECT w.workflow_id FROM workflows w JOIN tree "
    "ON w.workflow_id = tree.id WHERE w.workflow_id != ? "
    "AND w.status = 'cancelled' AND w.error IS ?"
)
# A queued workflow goes back to its queue (its limits hold for it as for any other); its
# dedup key is not taken again (it was freed when the workflow ended, and may be held now).
# Its timeout goes too: a resumed workflow has no deadline, and the next dequeue would set one.
REOPEN_WORKFLOW = (
    "UPDATE workflows SET status = CASE WHEN queue IS NULL THEN 'pending' ELSE 'enqueued' END, "
    "updated_at = ?1, owner = CASE WHEN queue IS NULL THEN ?2 END, deadline = NULL, "
    "recovery_attempts = 0, dedup_key = NULL, timeout = NULL, "
    "app_version = coalesce(?3, app_version) "
    "WHERE workflow_id = ?4 RETURNING status"
)
SELECT_DESCENDANTS = f"{DESCENDANTS} SELECT id FROM tree WHERE id != ?"
CANCEL_WORKFLOW = (
    "UPDATE workflows SET status = 'cancelled', error = ?, checksum = ?, "
    "updated_at = ? WHERE workflow_id = ?"
)
PENDING_BY_VERSION = (
    "SELECT app_version, count(*) FROM workflows WHERE status = 'pending' GROUP BY app_version"
)
PENDING = (
    "SELECT workflow_id, name, owner FROM workflows WHERE status = 'pending' "
    "AND (?1 IS NULL OR app_version = ?1) ORDER BY created_at"
)
LIST_WORKFLOWS = f"SELECT {WORKFLOW_COLUMNS} FROM workflows"  # + the filters, then:
LIST_ORDER = " ORDER BY created_at DESC, workflow_id DESC LIMIT ? OFFSET ?"
COUNT_WORKFLOWS = "SELECT status, count(*) FROM workflows{where} GROUP BY status"
STATUSES = "SELECT workflow_id, status FROM workflows WHERE workflow_id IN ({marks})"
STATUS_CHUNK = 500  # ids per STATUSES query, well under SQLite's parameter limit
NAME_AND_STATUS = "SELECT name, status FROM workflows WHERE workflow_id = ?"
INSERT_FORK = (
    "INSERT INTO workflows (workflow_id, name, status, inputs, checksum, created_at, "
    "updated_at, app_version, parent_id, owner) "
    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)"
)
FINISHED_BEFORE = (  # a child its unfinished parent may still wait for stays (gc)
    "SELECT workflow_id FROM workflows AS w WHERE status NOT IN ('pending', 'enqueued') "
    "AND updated_at < ? AND NOT EXISTS (SELECT 1 FROM workflows AS p WHERE p.workflow_id = "
    "w.parent_id AND p.status IN ('pending', 'enqueued'))"
)
DELETE_STEPS = "DELETE FROM steps WHERE workflow_id = ?"
DELETE_MESSAGES = "DELETE FROM messages WHERE destination = ?"
DELETE_EVENTS = "DELETE FROM events WHERE workflow_id = ?"
DELETE_STREAMS = "DELETE FROM streams WHERE workflow_id = ?"
DELETE_PROMISES = "DELETE FROM promises WHERE workflow_id = ?"
DELETE_WORKFLOW = "DELETE FROM workflows WHERE workflow_id = ?"

# -- steps --------------------------------------------------------------------------------

SELECT_STEPS = f"SELECT {ALL_STEP_COLUMNS} FROM steps WHERE workflow_id = ? ORDER BY step"
SELECT_OLD_STEPS = (
    f"SELECT {OLD_STEP_COLUMNS} FROM steps WHERE workflow_id = ? ORDER BY step"
)
SELECT_STEPS_BELOW = (
    f"SELECT {ALL_STEP_COLUMNS} FROM steps WHERE workflow_id = ? AND step < ?"
)
COPY_STEP = (
    f"INSERT INTO steps ({ALL_STEP_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UNFENCED_STEP = (  # the fault seam's ``no_fence`` defect only
    f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {UPSERT_STEP}"
)
STEP_CHECKSUM = "SELECT checksum FROM steps WHERE workflow_id = ? AND step = ?"

# -- messages, events, streams, promises ---------------------------------------------------

MESSAGE_COLUMNS = (
    "seq, destination, topic, payload, checksum, sender, key, created_at, consumed_step, "
    "consumed_at"
)
WORKFLOW_EXISTS = "SELECT 1 FROM workflows WHERE workflow_id = ?"
# Nothing is written for a key the destination already received (an outside retry).
INSERT_MESSAGE = (
    "INSERT INTO messages (destination, topic, payload, checksum, sender, key, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (destination, key) WHERE key IS NOT NULL "
    "DO NOTHING"
)
OLDEST_UNREAD = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE destination = ? AND topic = ? "
    "AND consumed_step IS NULL ORDER BY seq LIMIT 1"
)
CONSUME_MESSAGE = (
    "UPDATE messages SET consumed_step = ?, consumed_at = ? WHERE seq = ? "
    "AND consumed_step IS NULL"
)
UNREAD_TOPICS = (
    "SELECT DISTINCT topic FROM messages WHERE destination = ? AND consumed_step IS NULL"
)
MAILBOX = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE destination = ? ORDER BY seq"
UPSERT_EVENT = (
    "INSERT INTO events (workflow_id, key, value, checksum, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (workflow_id, key) DO UPDATE SET value = excluded.value, "
    "checksum = excluded.checksum, updated_at = excluded.updated_at"
)
SELECT_EVENT = "SELECT value, checksum FROM events WHERE workflow_id = ? AND key = ?"
SELECT_EVENTS = (
    "SELECT key, value, checksum FROM events WHERE workflow_id = ? ORDER BY key"
)
# (next position, closed) of one stream.
STREAM_END = (
    "SELECT coalesce(max(position) + 1, 0), "
    "coalesce(max(position) FILTER (WHERE value IS NULL), -1) >= 0 "
    "FROM streams WHERE workflow_id = ? AND key = ?"
)
INSERT_STREAM_ITEM = (
    "INSERT INTO streams (workflow_id, key, position, value, checksum, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
READ_STREAM = (
    "SELECT position, value, checksum FROM streams WHERE workflow_id = ? AND key = ? "
    "AND position >= ? ORDER BY position LIMIT ?"
)
SELECT_STREAMS = (
    "SELECT key, count(value), count(*) > count(value) FROM streams WHERE workflow_id = ? "
    "GROUP BY key ORDER BY key"
)
# A fork's streams: the source's first ``count`` items of a key (the ones its copied steps
# wrote), then the close marker if a copied step closed it.
COPY_STREAM_ITEMS = (
    "SELECT position, value, checksum, created_at FROM streams WHERE workflow_id = ? "
    "AND key = ? AND position < ? AND value IS NOT NULL ORDER BY position"
)
PROMISE_COLUMNS = (
    "promise_id, workflow_id, step, output, error, checksum, created_at, settled_at"
)
INSERT_PROMISE = (
    f"INSERT INTO promises ({PROMISE_COLUMNS}) VALUES (?, ?, ?, NULL, NULL, ?, ?, NULL)"
)
SELECT_PROMISE = f"SELECT {PROMISE_COLUMNS} FROM promises WHERE promise_id = ?"
SETTLE_PROMISE = (
    "UPDATE promises SET output = ?, error = ?, checksum = ?, settled_at = ? "
    "WHERE promise_id = ? AND settled_at IS NULL"
)
SELECT_PROMISES = (
    f"SELECT {PROMISE_COLUMNS} FROM promises WHERE workflow_id = ? ORDER BY step"
)

# -- queues -------------------------------------------------------------------------------

# (pending in the queue, of them owned by the owner bound second)
QUEUE_RUNNING = (
    "SELECT count(*), count(*) FILTER (WHERE owner = ?2) FROM workflows "
    "WHERE queue = ?1 AND status = 'pending'"
)
QUEUE_RUNNING_BY_PARTITION = (
    "SELECT partition_key, count(*) FROM workflows WHERE queue = ? AND status = 'pending' "
    "GROUP BY partition_key"
)
# Dequeues inside the rolling window (after the instant bound second): how many, the oldest.
# Every dequeue is a row, a recovered workflow's second one too (it starts again).
# ``started_at + per > now`` is the exact test, written as the reopening instant is computed
# (``oldest + per``), so a consumer woken at that instant finds the window open; the looser
# range before it is what the index serves.
QUEUE_WINDOW = (
    "SELECT count(*), min(started_at) FROM queue_starts WHERE queue = :queue "
    "AND started_at > :now - :per - 1.0 AND started_at + :per > :now"
)
INSERT_QUEUE_START = "INSERT INTO queue_starts (queue, started_at) VALUES (?, ?)"
PRUNE_QUEUE_STARTS = "DELETE FROM queue_starts WHERE queue = ? AND started_at <= ?"
# The workflows a consumer may take, in queue order: registered with it (a JSON array of
# names), of its version when it is gated. ``rowid`` is enqueue order (it only grows while
# the rows it orders exist), and the index on (queue, status, priority) ends in it.
_TAKEABLE = (
    "queue = :queue AND status = 'enqueued' AND name IN (SELECT value FROM json_each(:names)) "
    "AND (:version IS NULL OR app_version = :version)"
)
ANY_ENQUEUED = f"SELECT 1 FROM workflows WHERE {_TAKEABLE} LIMIT 1"
NEXT_ENQUEUED = (
    f"SELECT workflow_id, partition_key FROM workflows WHERE {_TAKEABLE} "
    "ORDER BY priority, rowid LIMIT :limit"
)
# Partitioned: the partitions with workflows waiting, then each one's heads (as many as it
# has room for), each an index range of its own: a dequeue costs the partitions, not the
# workflows waiting in them.
WAITING_PARTITIONS = (
    "SELECT DISTINCT partition_key FROM workflows WHERE queue = ? AND status = 'enqueued' "
    "AND partition_key IS NOT NULL"
)
NEXT_IN_PARTITION = (
    f"SELECT workflow_id, priority, rowid FROM workflows WHERE {_TAKEABLE} "
    "AND partition_key = :key ORDER BY priority, rowid LIMIT :limit"
)
# The claim: only a still-enqueued row, so two consumers never take one workflow. A timeout
# counts from the first dequeue (a recovered workflow keeps its deadline); an inherited
# deadline (a child's parent's) still holds if earlier.
DEQUEUE = (
    "UPDATE workflows SET status = 'pending', owner = :owner, "
    "dequeued_at = coalesce(dequeued_at, :now), "
    "updated_at = :now, deadline = CASE WHEN timeout IS NULL THEN deadline "
    "ELSE min(coalesce(deadline, :now + timeout), :now + timeout) END "
    "WHERE workflow_id = :id AND status = 'enqueued'"
)
RACY_DEQUEUE = DEQUEUE.removesuffix(" AND status = 'enqueued'")  # the racy_dequeue defect
UPSERT_QUEUE = (
    "INSERT INTO queues (name, concurrency, worker_concurrency, rate_limit, rate_period, "
    "partitioned, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
    "concurrency = excluded.concurrency, worker_concurrency = excluded.worker_concurrency, "
    "rate_limit = excluded.rate_limit, rate_period = excluded.rate_period, "
    "partitioned = excluded.partitioned, updated_at = excluded.updated_at"
)
SELECT_QUEUES = (
    "SELECT name, concurrency, worker_concurrency, rate_limit, rate_period, partitioned "
    "FROM queues"
)
QUEUE_COUNTS = (
    "SELECT queue, count(*) FILTER (WHERE status = 'enqueued'), "
    "count(*) FILTER (WHERE status = 'pending'), "
    "(SELECT count(*) FROM queue_starts s WHERE s.queue = w.queue AND s.started_at > ?), "
    "min(updated_at) FILTER (WHERE status = 'enqueued') FROM workflows w "
    "WHERE queue IS NOT NULL GROUP BY queue"
)
# ``updated_at`` of an enqueued workflow is when it was (last) put in its queue: its wait.
# A recovered queued workflow goes back to its queue (at its old place: priority, rowid) to
# be dequeued within the limits again, instead of running past them under its claimer.
REQUEUE = (
    "UPDATE workflows SET status = 'enqueued', owner = NULL, updated_at = ?3 WHERE workflow_id IN "
    "(SELECT value FROM json_each(?1)) AND owner = ?2 AND status = 'pending' "
    "AND queue IS NOT NULL RETURNING workflow_id"
)

# -- owners -------------------------------------------------------------------------------

UPSERT_OWNER = (
    "INSERT INTO owners (owner, host, pid, heartbeat, lease, pid_namespace) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat"
)
SELECT_OWNERS = "SELECT owner, host, pid, heartbeat, lease, pid_namespace FROM owners"
DELETE_OWNER = "DELETE FROM owners WHERE owner = ?"
# An owner found dead, unless it beat again after the heartbeat it was judged on.
FORGET_OWNER = "DELETE FROM owners WHERE owner = ? AND heartbeat <= ?"
DISOWN = "UPDATE workflows SET owner = NULL WHERE owner = ?"

# -- schedules ----------------------------------------------------------------------------

UPSERT_SCHEDULE = (
    "INSERT INTO schedules (name, workflow, cron, tz, catch_up, paused, last_fire, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(name) DO UPDATE SET workflow = excluded.workflow, "
    "cron = excluded.cron, tz = excluded.tz, catch_up = excluded.catch_up, "
    "updated_at = excluded.updated_at"
)
SELECT_SCHEDULES = (
    "SELECT name, workflow, cron, tz, catch_up, paused, last_fire, created_at, "
    "updated_at FROM schedules ORDER BY name"
)
PAUSE_SCHEDULE = "UPDATE schedules SET paused = ?, updated_at = ? WHERE name = ?"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
# The latest fire only grows.
SCHEDULE_FIRED = (
    "UPDATE schedules SET last_fire = max(coalesce(last_fire, ?), ?) WHERE name = ?"
)

# -- the file -----------------------------------------------------------------------------

# One statement, so one snapshot: another process migrating a new file at this moment must
# not show us its tables without its application id.
IDENTIFY = (
    "SELECT (SELECT application_id FROM pragma_application_id), "
    "(SELECT user_version FROM pragma_user_version), "
    "(SELECT count(*) FROM sqlite_schema)"
)
JOURNAL_MODE_WAL = "PRAGMA journal_mode=WAL"
SYNCHRONOUS = "PRAGMA synchronous={level}"  # FULL or NORMAL
USER_VERSION = "PRAGMA user_version"
SET_USER_VERSION = f"PRAGMA user_version={SCHEMA_VERSION}"
SET_APPLICATION_ID = f"PRAGMA application_id={APPLICATION_ID}"
# Changes with every commit made through another connection (another process or App).
DATA_VERSION = "PRAGMA data_version"
CHECKPOINT_TRUNCATE = "PRAGMA wal_checkpoint(TRUNCATE)"
QUICK_CHECK = "PRAGMA quick_check"
INTEGRITY_CHECK = "PRAGMA integrity_check"

# -- backup, check, export, import (``transfer.py``; table and column names are the schema's
# own, read from the file, never a caller's) ---------------------------------------------------

VACUUM_INTO = "VACUUM INTO ?"  # one read snapshot, written as a new compact file
TABLES = "SELECT name FROM sqlite_schema WHERE type = 'table'"
TABLE_COLUMNS = "PRAGMA table_info({table})"
ALL_ROWS = "SELECT * FROM {table}"
ROWS_OF = "SELECT * FROM {table} WHERE {column} = ? ORDER BY {order}"
INSERT_ROW = "INSERT INTO {table} ({columns}) VALUES ({marks})"
