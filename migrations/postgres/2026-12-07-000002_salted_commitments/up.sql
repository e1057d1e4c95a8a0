-- Salted commitments (PostgreSQL). Keep in step with ../../sqlite/ (same folder names).
--
-- A grant gets a random 32-byte salt and the commitment HMAC-SHA256(salt, payload bytes); each
-- of its submissions the commitment HMAC-SHA256(salt, canonical body bytes). The audit log
-- records the commitments instead of plain SHA-256 (docs/AUDIT.md, "Commitments"). Rows made
-- before have NULLs here and keep their plain hashes. (Retention's trigger on submissions
-- compares whole rows, so it covers the new column as it is.)
ALTER TABLE grants ADD COLUMN commitment_salt BYTEA;
ALTER TABLE grants ADD COLUMN payload_commitment BYTEA;
ALTER TABLE submissions ADD COLUMN body_commitment BYTEA;
