-- linklease foundation schema (PostgreSQL). Keep in step with ../../sqlite/ (same folder names).
-- Ids are UUID text; instants are BIGINT microseconds since the Unix epoch (UTC); hashes are BYTEA.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    key_hash    BYTEA NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE clients (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    name               TEXT NOT NULL,
    secret_hash        BYTEA NOT NULL,
    allowed_ip_blocks  TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    revoked_at         BIGINT,
    revoke_reason      TEXT
);
CREATE INDEX clients_tenant ON clients (tenant_id);

-- Immutable: a trigger below refuses every UPDATE and DELETE.
CREATE TABLE grants (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    api_key_id         TEXT NOT NULL REFERENCES api_keys (id),
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    token_hash         BYTEA NOT NULL UNIQUE,
    payload_sha256     BYTEA NOT NULL,
    permissions        TEXT NOT NULL,
    max_uses           INTEGER NOT NULL,
    lease_ttl_seconds  INTEGER NOT NULL,
    factor_kind        TEXT NOT NULL,
    factor_verifier    BYTEA,
    otp_channel        TEXT NOT NULL,
    otp_to             TEXT,
    allowed_ip_blocks  TEXT NOT NULL,
    labels             TEXT NOT NULL,
    supersedes         TEXT REFERENCES grants (id)
);
CREATE INDEX grants_tenant_id ON grants (tenant_id, id);
CREATE INDEX grants_supersedes ON grants (supersedes);

CREATE FUNCTION linklease_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER grants_insert_only BEFORE UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION linklease_refuse_change();
CREATE TRIGGER grants_insert_only_truncate BEFORE TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION linklease_refuse_change();

-- The payload lives apart from the grant so that retention can drop it while the grant (and its
-- payload_sha256) stays. Never updated.
CREATE TABLE grant_payloads (
    grant_id  TEXT PRIMARY KEY NOT NULL REFERENCES grants (id),
    payload   TEXT NOT NULL
);
CREATE TRIGGER grant_payloads_no_update BEFORE UPDATE ON grant_payloads
    FOR EACH ROW EXECUTE FUNCTION linklease_refuse_change();

-- Labels, one row each, for `label.K=V` filters.
CREATE TABLE grant_labels (
    grant_id   TEXT NOT NULL REFERENCES grants (id),
    tenant_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (grant_id, name)
);
CREATE INDEX grant_labels_lookup ON grant_labels (tenant_id, name, value, grant_id);

-- The mutable facts about a grant: counters and the revocation. Changed only by conditional
-- updates in the same transaction as the audit event that records the change.
CREATE TABLE grant_state (
    grant_id         TEXT PRIMARY KEY NOT NULL REFERENCES grants (id),
    uses             INTEGER NOT NULL DEFAULT 0,
    factor_failures  INTEGER NOT NULL DEFAULT 0,
    otp_failures     INTEGER NOT NULL DEFAULT 0,
    locked_at        BIGINT,
    revoked_at       BIGINT,
    revoke_reason    TEXT
);

-- Append-only history. prev_hash/hash are the tamper-evident chain (filled by the audit chain).
CREATE TABLE audit_events (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                BIGINT NOT NULL,
    tenant_id         TEXT,
    grant_id          TEXT,
    lease_id          TEXT,
    kind              TEXT NOT NULL,
    actor_kind        TEXT NOT NULL,
    actor_id          TEXT,
    actor_ip          TEXT,
    actor_user_agent  TEXT,
    detail            TEXT NOT NULL,
    prev_hash         BYTEA,
    hash              BYTEA
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_grant ON audit_events (grant_id, seq);
