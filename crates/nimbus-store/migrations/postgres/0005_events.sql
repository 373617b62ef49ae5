-- The transactional outbox: events are written in the transaction of the
-- change they describe and published later by the relay, in `seq` order.
-- The same tables as migrations/sqlite/0005_events.sql.

CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event's own id (`evt_…`), also the bus's de-duplication id.
    id TEXT NOT NULL UNIQUE,
    -- No foreign key: a repository's events outlive it.
    repo_id BIGINT NOT NULL,
    repo TEXT NOT NULL,
    type TEXT NOT NULL,
    -- The event as JSON.
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);

CREATE INDEX events_unpublished ON events (seq) WHERE published_at IS NULL;
CREATE INDEX events_repo_seq ON events (repo_id, seq);

-- Which process relays: one holder at a time, until `expires_at`.
CREATE TABLE relay_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
