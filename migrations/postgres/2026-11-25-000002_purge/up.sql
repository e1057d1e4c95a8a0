-- Retention (PostgreSQL). Keep in step with ../../sqlite/ (same folder names).
--
-- `linklease purge` empties the body of an ended grant's submissions and keeps everything else,
-- body_sha256 included. Submissions stay append-only otherwise: the one UPDATE allowed sets a
-- non-empty body to '' with every other column unchanged (compared as whole rows, so a column
-- added later is covered too); DELETE stays refused.
CREATE FUNCTION linklease_submissions_purge_only() RETURNS trigger AS $$
BEGIN
    IF OLD.body <> '' AND NEW.body = ''
       AND (to_jsonb(NEW) - 'body') = (to_jsonb(OLD) - 'body') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'submissions are append-only (retention may only empty a body)';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER submissions_append_only ON submissions;
CREATE TRIGGER submissions_append_only BEFORE DELETE ON submissions
    FOR EACH ROW EXECUTE FUNCTION linklease_refuse_change();
CREATE TRIGGER submissions_purge_only BEFORE UPDATE ON submissions
    FOR EACH ROW EXECUTE FUNCTION linklease_submissions_purge_only();
