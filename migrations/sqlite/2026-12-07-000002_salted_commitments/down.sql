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
    AND NEW.creates IS OLD.creates
    AND NEW.idempotency_key IS OLD.idempotency_key
)
BEGIN
    SELECT RAISE(ABORT, 'submissions are append-only (retention may only empty a body)');
END;
ALTER TABLE submissions DROP COLUMN body_commitment;
ALTER TABLE grants DROP COLUMN payload_commitment;
ALTER TABLE grants DROP COLUMN commitment_salt;
