DROP TRIGGER submissions_purge_only ON submissions;
DROP TRIGGER submissions_append_only ON submissions;
CREATE TRIGGER submissions_append_only BEFORE UPDATE OR DELETE ON submissions
    FOR EACH ROW EXECUTE FUNCTION linklease_refuse_change();
DROP FUNCTION linklease_submissions_purge_only();
