//! The one portable schema both backends share (see `migrations/`).
#![allow(missing_docs)] // diesel::table! generates the DSL modules and column types.

diesel::table! {
    tenants (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        tenant_id -> Text,
        key_hash -> Binary,
        scopes -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        tenant_id -> Text,
        name -> Text,
        secret_hash -> Binary,
        allowed_ip_blocks -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        tenant_id -> Text,
        api_key_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        token_hash -> Binary,
        payload_sha256 -> Binary,
        permissions -> Text,
        max_uses -> Integer,
        lease_ttl_seconds -> Integer,
        factor_kind -> Text,
        factor_verifier -> Nullable<Binary>,
        otp_channel -> Text,
        otp_to -> Nullable<Text>,
        allowed_ip_blocks -> Text,
        labels -> Text,
        supersedes -> Nullable<Text>,
        commitment_salt -> Nullable<Binary>,
        payload_commitment -> Nullable<Binary>,
    }
}

diesel::table! {
    grant_payloads (grant_id) {
        grant_id -> Text,
        payload -> Text,
    }
}

diesel::table! {
    grant_labels (grant_id, name) {
        grant_id -> Text,
        tenant_id -> Text,
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    grant_state (grant_id) {
        grant_id -> Text,
        uses -> Integer,
        factor_failures -> Integer,
        otp_failures -> Integer,
        locked_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
        creates -> Integer,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
        public_key -> Binary,
        sealed_private -> Binary,
    }
}

diesel::table! {
    flows (id) {
        id -> Text,
        grant_id -> Text,
        client_id -> Nullable<Text>,
        cookie_hash -> Nullable<Binary>,
        created_at -> BigInt,
        expires_at -> BigInt,
        step -> Text,
        sends -> Integer,
        otp_send -> Nullable<Integer>,
        otp_hash -> Nullable<Binary>,
        otp_sent_at -> Nullable<BigInt>,
        otp_expires_at -> Nullable<BigInt>,
        otp_tries -> Nullable<Integer>,
        version -> Integer,
    }
}

diesel::table! {
    leases (id) {
        id -> Text,
        tenant_id -> Text,
        grant_id -> Text,
        flow_id -> Text,
        client_id -> Nullable<Text>,
        issued_at -> BigInt,
        expires_at -> BigInt,
        ended_at -> Nullable<BigInt>,
        end_reason -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    submissions (id) {
        id -> Text,
        tenant_id -> Text,
        grant_id -> Text,
        lease_id -> Text,
        received_at -> BigInt,
        body -> Text,
        body_sha256 -> Binary,
        creates -> Integer,
        idempotency_key -> Nullable<Text>,
        body_commitment -> Nullable<Binary>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        at -> BigInt,
        tenant_id -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        lease_id -> Nullable<Text>,
        kind -> Text,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        actor_ip -> Nullable<Text>,
        actor_user_agent -> Nullable<Text>,
        detail -> Text,
        prev_hash -> Nullable<Binary>,
        hash -> Nullable<Binary>,
        chain -> Nullable<Text>,
        chain_seq -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// SQLite only: events by grant, filled in the background (see `audit_index`).
    audit_grant_index (grant_id, seq) {
        grant_id -> Text,
        seq -> BigInt,
    }
}

diesel::table! {
    /// SQLite only: one row; every event with a grant and `seq <= upto` is in the index.
    audit_grant_index_state (id) {
        id -> Integer,
        upto -> BigInt,
    }
}

diesel::table! {
    /// PostgreSQL only: events committed with their change, not yet chained (see `audit_queue`).
    audit_queue (id) {
        id -> BigInt,
        chain -> Text,
        at -> BigInt,
        tenant_id -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        lease_id -> Nullable<Text>,
        kind -> Text,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        actor_ip -> Nullable<Text>,
        actor_user_agent -> Nullable<Text>,
        detail -> Text,
    }
}

diesel::table! {
    audit_heads (chain) {
        chain -> Text,
        chain_seq -> BigInt,
        hash -> Binary,
    }
}

diesel::table! {
    audit_keys (kid) {
        kid -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
        public_key -> Binary,
        sealed_private -> Binary,
    }
}

diesel::table! {
    audit_checkpoints (id) {
        id -> BigInt,
        at -> BigInt,
        chain -> Text,
        chain_seq -> BigInt,
        hash -> Binary,
        kid -> Text,
        signature -> Binary,
    }
}

diesel::joinable!(grant_state -> grants (grant_id));
diesel::joinable!(grant_payloads -> grants (grant_id));
diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    api_keys,
    clients,
    grants,
    grant_payloads,
    grant_labels,
    grant_state,
    audit_events,
    audit_grant_index,
    audit_grant_index_state,
    signing_keys,
    flows,
    leases,
    submissions,
    audit_heads,
    audit_queue,
    audit_keys,
    audit_checkpoints,
);
