-- Deferred grant index (SQLite). Keep in step with ../../postgres/ (same folder names).
--
-- An index on audit_events (grant_id, seq) puts every event of a different grant on a different
-- leaf page, so each group commit of n read events wrote about n index pages to the WAL. Here
-- the serving process indexes events by grant in the background instead, a second's worth at
-- a time sorted by grant, so that one page takes many entries. Events after `upto` are not
-- indexed yet; a grant's history reads them by `seq` (see `audit_index.rs`).
CREATE TABLE audit_grant_index (
    grant_id  TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (grant_id, seq)
) WITHOUT ROWID;

-- One row: every event with seq <= upto that has a grant is in audit_grant_index.
CREATE TABLE audit_grant_index_state (
    id    INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    upto  INTEGER NOT NULL
);

INSERT INTO audit_grant_index (grant_id, seq)
    SELECT grant_id, seq FROM audit_events WHERE grant_id IS NOT NULL;
INSERT INTO audit_grant_index_state (id, upto)
    SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events;
DROP INDEX audit_events_grant;
