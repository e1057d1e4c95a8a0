-- Audit queue: PostgreSQL only. Keep in step with ../../postgres/ (same folder names).
--
-- SQLite has one writer, which holds the database's write lock anyway: each transaction
-- appends its events to their chains itself. Nothing changes.
SELECT 1;
