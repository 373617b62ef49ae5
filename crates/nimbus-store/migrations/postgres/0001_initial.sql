-- The initial Nimbus metadata schema, as migrations/sqlite/0001_initial.sql
-- on SQLite: the same tables, columns, constraints and indexes, so both
-- backends share their schema history and their SQL.
--
-- Ids are `BIGINT GENERATED ALWAYS AS IDENTITY`, which never hands out an id
-- again (like SQLite's AUTOINCREMENT): storage keys are derived from
-- repository ids, so a new repository must never inherit an old one's id.
-- Times are Unix seconds in BIGINT; byte strings are BYTEA.

CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_owner BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

-- At most one instance owner.
CREATE UNIQUE INDEX users_single_owner ON users (is_owner) WHERE is_owner;

CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    -- SHA-256 of the secret; the secret itself is never stored.
    hash BYTEA NOT NULL UNIQUE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write', 'admin')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT
);

CREATE INDEX tokens_user_id ON tokens (user_id);

CREATE TABLE repositories (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Kept as the user spelled it; unique regardless of case (names are ASCII).
    name TEXT NOT NULL,
    private BOOLEAN NOT NULL,
    default_branch TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX repositories_name_lower ON repositories (lower(name));

CREATE TABLE refs (
    repo_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    -- Ref names are bytes; BYTEA compares bytewise (memcmp), as BLOB does.
    name BYTEA NOT NULL,
    -- Lowercase hex object ids.
    target TEXT NOT NULL,
    peeled TEXT,
    PRIMARY KEY (repo_id, name)
);

CREATE TABLE packs (
    repo_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    pack_size BIGINT NOT NULL,
    index_size BIGINT NOT NULL,
    object_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
