-- Chain whatever is still queued before this runs (any audit read does): its events would be lost.
DROP TABLE audit_queue;
