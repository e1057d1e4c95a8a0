-- Deferred grant index: SQLite only. Keep in step with ../../sqlite/ (same folder names).
--
-- PostgreSQL keeps its index on audit_events (grant_id, seq): several instances share the
-- database and none of them owns it, and each statement is a round trip there, so the random
-- index page per event is not what limits it. Nothing changes.
SELECT 1;
