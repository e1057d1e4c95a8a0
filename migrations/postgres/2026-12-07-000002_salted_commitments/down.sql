ALTER TABLE submissions DROP COLUMN body_commitment;
ALTER TABLE grants DROP COLUMN payload_commitment;
ALTER TABLE grants DROP COLUMN commitment_salt;
