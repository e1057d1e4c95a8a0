DROP TRIGGER submissions_append_only_update;
CREATE TRIGGER submissions_append_only_update BEFORE UPDATE ON submissions
BEGIN
    SELECT RAISE(ABORT, 'submissions are append-only');
END;
