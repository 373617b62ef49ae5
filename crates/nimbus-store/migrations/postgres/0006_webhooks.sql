-- Webhooks, the dispatcher's cursor over the outbox and the delivery log.
-- The same tables as migrations/sqlite/0006_webhooks.sql.

CREATE TABLE webhooks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL: instance-wide.
    repo_id BIGINT REFERENCES repositories (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- The HMAC key, kept as given: signing needs it.
    secret TEXT NOT NULL,
    -- JSON array of event types, or ["*"].
    events TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Only events after this outbox seq are sent.
    since_seq BIGINT NOT NULL
);

CREATE INDEX webhooks_repo_id ON webhooks (repo_id);

-- The last outbox event turned into deliveries. One row; starts at the
-- newest event so history is not sent.
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);

INSERT INTO webhook_cursor (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;

-- One row per attempt.
CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    guid TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    github_event TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    redelivery BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    delivered_at BIGINT,
    duration_ms BIGINT,
    -- JSON arrays of [name, value], secrets redacted.
    request_headers TEXT,
    response_status BIGINT,
    response_headers TEXT,
    response_body TEXT,
    error TEXT
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (hook_id, id);
