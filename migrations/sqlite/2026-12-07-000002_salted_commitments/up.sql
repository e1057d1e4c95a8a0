-- Salted commitments (SQLite). Keep in step with ../../postgres/ (same folder names).
--
-- A grant gets a random 32-byte salt and the commitment HMAC-SHA256(salt, payload bytes); each
-- of its submissions the commitment HMAC-SHA256(salt, canonical body bytes). The audit log
-- records the commitments instead of plain SHA-256 (docs/AUDIT.md, "Commitments"). Rows made
-- before have NULLs here and keep their plain hashes.
ALTER TABLE grants ADD COLUMN commitment_salt BLOB;
ALTER TABLE grants ADD COLUMN payload_commitment BLOB;
ALTER TABLE submissions ADD COLUMN body_commitment BLOB;

-- Retention may empty a body only with every other column unchanged, the new one included.
DROP TRIGGER submissions_append_only_update;
CREATE TRIGGER submissions_append_only_update BEFORE UPDATE ON submissions
WHEN NOT (
    OLD.body <> '' AND NEW.body = ''
    AND NEW.id IS OLD.id
    AND NEW.tenant_id IS OLD.tenant_id
    AND NEW.grant_id IS OLD.grant_id
    AND NEW.lease_id IS OLD.lease_id
    AND NEW.received_at IS OLD.received_at
    AND NEW.body_sha256 IS OLD.body_sha256
    AND NEW.body_commitment IS OLD.body_commitment
    AND NEW.creates IS OLD.creates
    AND NEW.idempotency_key IS OLD.idempotency_key
)
BEGIN
    SELECT RAISE(ABORT, 'submissions are append-only (retention may only empty a body)');
END;
