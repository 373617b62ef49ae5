-- Maintenance: compaction and garbage collection of packs.
--
-- `pack_generation` moves on each time garbage collection removes objects;
-- a push checked against an older generation is checked again before its
-- refs move. `ref_version` moves on with every push that changes a ref, so
-- garbage collection can tell that what it found reachable still is.
ALTER TABLE repositories ADD COLUMN pack_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE repositories ADD COLUMN ref_version BIGINT NOT NULL DEFAULT 0;

-- Packs taken out of a repository by maintenance. Their files stay in the
-- object store for a grace period, for requests that still read them.
CREATE TABLE retired_packs (
    repo_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    retired_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
