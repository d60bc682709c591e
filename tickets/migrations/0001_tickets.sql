-- The ticket service's database (issue 12). Every table says what it is for; the rules
-- behind the columns are in docs/tickets.md.

-- Kafka positions, committed in the same transaction as the state their records made:
-- a crash between the two cannot happen, so a record counts once (exactly once in
-- effect). One row per (group, topic, partition); the row lock also fences two instances
-- that briefly both read a partition while ownership moves.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Every CloudEvent applied, by its ce_id: a record the gateway's outbox delivered twice
-- (under another offset) is dropped the second time.
CREATE TABLE applied_events (
    ce_id       uuid        PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    kafka_offset bigint     NOT NULL,
    -- The moment the row was written (not the transaction's start): what latency
    -- measurements read.
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The gateway's contacts, as received. `phone_tail` (the last four digits of the
-- number a contact came from) is the check of the citizen's progress query (Art. 14);
-- the identity itself stays in `body`, read only by the centre (Art. 21).
CREATE TABLE contacts (
    id          uuid        PRIMARY KEY,
    ticket_ref  text        NOT NULL,
    citizen_key text        NOT NULL,
    channel     text        NOT NULL,
    received_at timestamptz NOT NULL,
    phone_tail  text,
    body        jsonb       NOT NULL
);
CREATE INDEX contacts_ref ON contacts (ticket_ref);

CREATE TABLE tickets (
    id                  bigserial   PRIMARY KEY,
    ticket_ref          text        NOT NULL UNIQUE,
    draft_id            uuid        NOT NULL UNIQUE,
    citizen_key         text        NOT NULL,
    channel             text        NOT NULL,
    received_at         timestamptz NOT NULL,
    state               text        NOT NULL,
    outcome             text,
    kind                text        NOT NULL,
    summary             text        NOT NULL,
    location            text,
    district            text,
    request             text,
    urgency             text        NOT NULL,
    -- The unit the draft's department or district hint pre-selects (Art. 10).
    suggested_unit      text,
    -- A supplementary ticket's original (Art. 14).
    parent_ref          text,
    lead_unit           text,
    co_units            text[]      NOT NULL DEFAULT '{}',
    dispatched_at       timestamptz,
    first_dispatched_at timestamptz,
    dispatch_due        date,
    handling_due        date,
    handling_days       integer,
    due_provisional     boolean     NOT NULL DEFAULT false,
    extended            boolean     NOT NULL DEFAULT false,
    returns             integer     NOT NULL DEFAULT 0,
    -- While the centre reviews a return: when it was asked (the review does not count
    -- against the unit's deadline, Art. 10).
    return_requested_at timestamptz,
    urge_count          integer     NOT NULL DEFAULT 0,
    card                text        NOT NULL DEFAULT 'none',
    -- The answer (Art. 8), the Art. 7 reason, the return request (Art. 10), the reply
    -- (Art. 13), by name.
    records             jsonb       NOT NULL DEFAULT '{}',
    -- The draft as the gateway sent it (transcript, prefill, contacts' ids).
    draft               jsonb       NOT NULL,
    -- The Art. 14 decision that made it, why, and the earlier ticket it concerns.
    repeat_decision     text        NOT NULL,
    repeat_reason       text        NOT NULL,
    repeat_of           text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX tickets_citizen ON tickets (citizen_key, id);
CREATE INDEX tickets_lead ON tickets (lead_unit, id);
CREATE INDEX tickets_open ON tickets (state, id) WHERE state <> 'closed';

-- Drafts taken as urges (Art. 14): no ticket of their own, the original's count went
-- up. Kept whole so an agent can overrule the decision and make the ticket after all;
-- the citizen's reference still finds the original in the progress query.
CREATE TABLE urges (
    draft_id     uuid        PRIMARY KEY,
    ticket_ref   text        NOT NULL UNIQUE,
    original_ref text        NOT NULL,
    citizen_key  text        NOT NULL,
    reason       text        NOT NULL,
    draft        jsonb       NOT NULL,
    received_at  timestamptz NOT NULL,
    overruled    boolean     NOT NULL DEFAULT false
);

-- Every transition, as its status event said it.
CREATE TABLE ticket_history (
    event_id   uuid        PRIMARY KEY,
    seq        bigserial   NOT NULL,
    ticket_ref text        NOT NULL,
    at         timestamptz NOT NULL,
    action     text        NOT NULL,
    article    text        NOT NULL,
    actor      text        NOT NULL,
    state      text        NOT NULL,
    detail     text
);
CREATE INDEX ticket_history_ref ON ticket_history (ticket_ref, seq);

-- Records to publish (status events, dead letters), written in the transaction that made
-- them; one instance at a time sends them in order and marks them sent.
CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    headers      jsonb       NOT NULL,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

-- The service's live instances (heartbeats), among which the topics' partitions are
-- shared.
CREATE TABLE members (
    instance text        PRIMARY KEY,
    seen_at  timestamptz NOT NULL
);
