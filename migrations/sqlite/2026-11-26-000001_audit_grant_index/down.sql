CREATE INDEX audit_events_grant ON audit_events (grant_id, seq);
DROP TABLE audit_grant_index_state;
DROP TABLE audit_grant_index;
