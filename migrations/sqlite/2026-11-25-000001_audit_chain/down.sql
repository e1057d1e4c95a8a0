DROP TABLE audit_checkpoints;
DROP TABLE audit_keys;
DROP TABLE audit_heads;
DROP INDEX audit_events_chain;
ALTER TABLE audit_events DROP COLUMN chain_seq;
ALTER TABLE audit_events DROP COLUMN chain;
