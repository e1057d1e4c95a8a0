-- Tamper-evident audit (PostgreSQL). Keep in step with ../../sqlite/ (same folder names).

-- Each event's place in its chain: the tenant id, or 'system' for events of no tenant.
-- Events written before this migration keep NULL (they predate the chain).
ALTER TABLE audit_events ADD COLUMN chain TEXT;
ALTER TABLE audit_events ADD COLUMN chain_seq BIGINT;
CREATE UNIQUE INDEX audit_events_chain ON audit_events (chain, chain_seq);

-- The last position and hash of every chain. Appending locks the chain's row, so appends of
-- one tenant queue while other tenants' do not.
CREATE TABLE audit_heads (
    chain      TEXT PRIMARY KEY NOT NULL,
    chain_seq  BIGINT NOT NULL,
    hash       BYTEA NOT NULL
);
INSERT INTO audit_heads (chain, chain_seq, hash) VALUES ('system', 0, decode(repeat('00', 32), 'hex'));
INSERT INTO audit_heads (chain, chain_seq, hash) SELECT id, 0, decode(repeat('00', 32), 'hex') FROM tenants;

-- The audit signing keys (Ed25519), sealed like the lease keys. Public keys are kept for ever so
-- that every bundle ever exported stays verifiable.
CREATE TABLE audit_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    created_at      BIGINT NOT NULL,
    retired_at      BIGINT,
    public_key      BYTEA NOT NULL,
    sealed_private  BYTEA NOT NULL
);

-- Signed statements "chain C had position N with hash H at time T".
CREATE TABLE audit_checkpoints (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    chain      TEXT NOT NULL,
    chain_seq  BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    kid        TEXT NOT NULL,
    signature  BYTEA NOT NULL
);
CREATE INDEX audit_checkpoints_chain ON audit_checkpoints (chain, chain_seq);
