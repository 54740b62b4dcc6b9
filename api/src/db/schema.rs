// @generated automatically by Diesel CLI.

diesel::table! {
    api_key_secret (id) {
        id -> Bool,
        secret -> Bytea,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Int8,
        name -> Text,
        scope -> Text,
        key_hash -> Text,
        prefix -> Text,
        user_id -> Int8,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    broadcasts (id) {
        id -> Uuid,
        sender_id -> Int8,
        template_id -> Text,
        idempotency_key -> Nullable<Text>,
        all_bound -> Bool,
        total -> Int4,
        queued -> Int4,
        skipped -> Jsonb,
        send_at -> Nullable<Timestamptz>,
        urgent -> Bool,
        created_at -> Timestamptz,
        cancelled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor_id -> Nullable<Int8>,
        actor -> Text,
        action -> Text,
        target -> Nullable<Text>,
        details -> Jsonb,
    }
}

diesel::table! {
    bind_states (state_hash) {
        state_hash -> Text,
        user_id -> Int8,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    deployment (id) {
        id -> Bool,
        serves -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Int8,
        username_hash -> Text,
        address -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    messages (id) {
        id -> Uuid,
        sender_id -> Int8,
        user_id -> Int8,
        template_id -> Text,
        url -> Nullable<Text>,
        data -> Jsonb,
        idempotency_key -> Nullable<Text>,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        msgid -> Nullable<Int8>,
        errcode -> Nullable<Int4>,
        errmsg -> Nullable<Text>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        delivery -> Nullable<Text>,
        miniprogram -> Nullable<Jsonb>,
        review_ref -> Nullable<Text>,
        review_openid -> Nullable<Text>,
        review_record_id -> Nullable<Int8>,
        fair_rank -> Int8,
        broadcast_id -> Nullable<Uuid>,
        send_at -> Nullable<Timestamptz>,
        held -> Bool,
        urgent -> Bool,
        reason -> Nullable<Text>,
        counted_day -> Nullable<Date>,
    }
}

diesel::table! {
    message_events (id) {
        id -> Int8,
        message_id -> Uuid,
        at -> Timestamptz,
        event -> Text,
        attempt -> Int4,
        errcode -> Nullable<Int4>,
        errmsg -> Nullable<Text>,
    }
}

diesel::table! {
    push_nonces (timestamp, nonce) {
        timestamp -> Int8,
        nonce -> Text,
        body_sha256 -> Text,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    quota_resets (id) {
        id -> Int8,
        reset_by -> Nullable<Int8>,
        reset_at -> Timestamptz,
    }
}

diesel::table! {
    review_cursors (key) {
        key -> Text,
        largest_id -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    send_rate (sender_id, window_start) {
        sender_id -> Int8,
        window_start -> Timestamptz,
        sends -> Int4,
    }
}

diesel::table! {
    send_pause (id) {
        id -> Bool,
        paused_until -> Timestamptz,
        errcode -> Nullable<Int4>,
        errmsg -> Text,
        paused_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (key_hash) {
        key_hash -> Text,
        state -> Jsonb,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    templates (template_id) {
        template_id -> Text,
        title -> Text,
        primary_industry -> Text,
        deputy_industry -> Text,
        content -> Text,
        example -> Text,
        synced_at -> Timestamptz,
        gone_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        username -> Text,
        password_hash -> Text,
        role -> Text,
        openid -> Nullable<Text>,
        bound_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        demo -> Bool,
        unionid -> Nullable<Text>,
    }
}

diesel::table! {
    user_day_sends (user_id, day) {
        user_id -> Int8,
        day -> Date,
        sends -> Int4,
    }
}

diesel::table! {
    wechat_events (id) {
        id -> Int8,
        dedup_key -> Text,
        from_user -> Text,
        msg_type -> Text,
        event -> Nullable<Text>,
        event_key -> Nullable<Text>,
        create_time -> Int8,
        fields -> Jsonb,
        reply -> Nullable<Text>,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    wechat_followers (openid) {
        openid -> Text,
        subscribed -> Bool,
        subscribed_at -> Nullable<Timestamptz>,
        event_time -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    wechat_tokens (app_id) {
        app_id -> Text,
        access_token -> Text,
        expires_at -> Timestamptz,
        fetched_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        webhook_id -> Uuid,
        event_id -> Uuid,
        event_type -> Text,
        ordering_key -> Text,
        payload -> Jsonb,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        last_attempt_at -> Nullable<Timestamptz>,
        last_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Uuid,
        url -> Text,
        events -> Array<Text>,
        secret -> Text,
        created_by -> Nullable<Int8>,
        created_at -> Timestamptz,
        disabled_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
    }
}

diesel::joinable!(audit_log -> users (actor_id));
diesel::joinable!(bind_states -> users (user_id));
diesel::joinable!(message_events -> messages (message_id));
diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_key_secret,
    api_keys,
    audit_log,
    bind_states,
    broadcasts,
    deployment,
    login_failures,
    message_events,
    messages,
    push_nonces,
    quota_resets,
    review_cursors,
    send_pause,
    send_rate,
    sessions,
    templates,
    user_day_sends,
    users,
    wechat_events,
    wechat_followers,
    wechat_tokens,
    webhook_deliveries,
    webhooks,
);
