-- Audit queue: PostgreSQL only. Keep in step with ../../sqlite/ (same folder names).
--
-- A change's audit events are committed in the change's own transaction, into this queue; a
-- chainer moves them into audit_events, chained and hashed, moments later (see the store's
-- audit_queue module). Appending to a tenant's chain in every transaction made all of that
-- tenant's writes, on every instance, queue on its head row through their commits.
CREATE TABLE audit_queue (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain             TEXT NOT NULL,
    at                BIGINT NOT NULL,
    tenant_id         TEXT,
    grant_id          TEXT,
    lease_id          TEXT,
    kind              TEXT NOT NULL,
    actor_kind        TEXT NOT NULL,
    actor_id          TEXT,
    actor_ip          TEXT,
    actor_user_agent  TEXT,
    detail            TEXT NOT NULL
);
