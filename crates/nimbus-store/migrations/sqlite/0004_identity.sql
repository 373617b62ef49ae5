-- Signing in: web sessions, invitations, links to external identity
-- providers, pending provider sign-ins, session signing keys and the audit
-- log. The same tables as migrations/postgres/0004_identity.sql. Secrets are
-- stored only as SHA-256 hashes.

CREATE TABLE sessions (
    -- Random; carried in the signed session token's `sid` claim.
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The current refresh secret, and the one before it: presenting the
    -- previous one again means it was stolen, and revokes the session.
    refresh_hash BLOB NOT NULL,
    previous_refresh_hash BLOB,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE invitations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    repo_id BIGINT REFERENCES repositories (id) ON DELETE CASCADE,
    access TEXT CHECK (access IN ('read', 'write', 'admin')),
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    revoked_at BIGINT
);

CREATE TABLE identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);

CREATE INDEX identities_user_id ON identities (user_id);

CREATE TABLE login_flows (
    state_hash BLOB PRIMARY KEY,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    invitation_hash BLOB,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

-- Kept when users and repositories go: names are copied, not referenced.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor_id BIGINT,
    actor TEXT,
    action TEXT NOT NULL,
    repo TEXT,
    target TEXT,
    client TEXT,
    detail TEXT NOT NULL
);

CREATE INDEX audit_events_at ON audit_events (at);
