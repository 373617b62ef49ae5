-- Accounts and permissions: repository visibility, collaborators, token
-- scopes and revocation. The same text as migrations/postgres/0003_access.sql.

-- `public`, `private` or `hidden` replaces the boolean `private`.
ALTER TABLE repositories ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public'
    CHECK (visibility IN ('public', 'private', 'hidden'));
UPDATE repositories SET visibility = 'private' WHERE private;
ALTER TABLE repositories DROP COLUMN private;

-- For local passwords (argon2id), not used yet.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- A comma-separated list of `repo:read`, `repo:write`, `admin`, `api`.
-- Existing tokens keep what their access level allowed, API use included.
-- `access` stays, written from the scopes, for the schema's CHECK.
ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
UPDATE tokens SET scopes = CASE access
    WHEN 'read' THEN 'repo:read,api'
    WHEN 'write' THEN 'repo:read,repo:write,api'
    ELSE 'repo:read,repo:write,admin,api' END;
ALTER TABLE tokens ADD COLUMN revoked_at BIGINT;

CREATE TABLE collaborators (
    repo_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write', 'admin')),
    PRIMARY KEY (repo_id, user_id)
);

CREATE INDEX collaborators_user_id ON collaborators (user_id);
