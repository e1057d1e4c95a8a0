-- Lease exchange (SQLite). Keep in step with ../../postgres/ (same folder names).

-- Child records created so far, across all submissions (checked against create.max).
ALTER TABLE grant_state ADD COLUMN creates INTEGER NOT NULL DEFAULT 0;

-- Lease-signing keys (Ed25519). The private key is sealed (AES-256-GCM) under a key derived
-- from the data dir's master secret, bound to its kid.
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    created_at      INTEGER NOT NULL,
    retired_at      INTEGER,
    public_key      BLOB NOT NULL,
    sealed_private  BLOB NOT NULL
);

-- One attempt to turn a link into a lease. `version` makes every change a compare-and-set,
-- so two requests (or two instances) never both advance one flow.
CREATE TABLE flows (
    id              TEXT PRIMARY KEY NOT NULL,
    grant_id        TEXT NOT NULL REFERENCES grants (id),
    client_id       TEXT REFERENCES clients (id),
    cookie_hash     BLOB UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    step            TEXT NOT NULL,
    sends           INTEGER NOT NULL,
    otp_send        INTEGER,
    otp_hash        BLOB,
    otp_sent_at     INTEGER,
    otp_expires_at  INTEGER,
    otp_tries       INTEGER,
    version         INTEGER NOT NULL
);
CREATE INDEX flows_grant ON flows (grant_id);

CREATE TABLE leases (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    grant_id         TEXT NOT NULL REFERENCES grants (id),
    flow_id          TEXT NOT NULL REFERENCES flows (id),
    client_id        TEXT REFERENCES clients (id),
    issued_at        INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    end_reason       TEXT,
    ip               TEXT,
    user_agent       TEXT
);
CREATE UNIQUE INDEX leases_flow ON leases (flow_id);
CREATE INDEX leases_grant ON leases (grant_id);

-- Append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE submissions (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    grant_id         TEXT NOT NULL REFERENCES grants (id),
    lease_id         TEXT NOT NULL REFERENCES leases (id),
    received_at      INTEGER NOT NULL,
    body             TEXT NOT NULL,
    body_sha256      BLOB NOT NULL,
    creates          INTEGER NOT NULL,
    idempotency_key  TEXT
);
CREATE UNIQUE INDEX submissions_idempotency ON submissions (grant_id, idempotency_key);
CREATE INDEX submissions_grant ON submissions (grant_id, id);
CREATE INDEX submissions_tenant ON submissions (tenant_id, id);
CREATE TRIGGER submissions_append_only_update BEFORE UPDATE ON submissions
BEGIN
    SELECT RAISE(ABORT, 'submissions are append-only');
END;
CREATE TRIGGER submissions_append_only_delete BEFORE DELETE ON submissions
BEGIN
    SELECT RAISE(ABORT, 'submissions are append-only');
END;
