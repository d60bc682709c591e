-- Closing the loop with the citizen (issue 13): the result SMS (Art. 13), the
-- satisfaction survey (Art. 16), revisits, redo and appeals (Art. 17), and what the
-- statistics (Art. 18) count. The flows are in docs/tickets.md.

ALTER TABLE tickets
    -- When the lead unit's reply came (Art. 13): "handled on time" compares its Beijing
    -- date with handling_due.
    ADD COLUMN replied_at timestamptz,
    -- When it was closed (the result SMS and the survey follow).
    ADD COLUMN closed_at  timestamptz,
    -- Redone once (Art. 17).
    ADD COLUMN redone     boolean NOT NULL DEFAULT false,
    -- The rating that counts: the newest survey round's (Art. 17).
    ADD COLUMN rating     text,
    -- A supervisor upheld the unit's appeal of that rating: it does not count (Art. 17).
    ADD COLUMN rating_appealed boolean NOT NULL DEFAULT false,
    -- When the ticket first showed each card (Art. 10), for the statistics (Art. 18).
    ADD COLUMN yellow_at  timestamptz,
    ADD COLUMN red_at     timestamptz;

-- The first time a card shows, whichever code path shows it.
CREATE FUNCTION tickets_card_seen() RETURNS trigger AS $$
BEGIN
    IF NEW.card = 'yellow' AND NEW.yellow_at IS NULL THEN
        NEW.yellow_at := NEW.updated_at;
    ELSIF NEW.card = 'red' AND NEW.red_at IS NULL THEN
        NEW.red_at := NEW.updated_at;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tickets_card_seen BEFORE INSERT OR UPDATE OF card ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_card_seen();

-- Statistics read tickets by the month they were received and by unit.
CREATE INDEX tickets_received ON tickets (received_at);

-- One survey per closure: round 1, and round 2 after a redo (the second rating counts,
-- Art. 17). The row is written when the survey SMS is asked for.
CREATE TABLE surveys (
    -- Derived from (ticket, round): a survey asked twice is one.
    id            uuid        PRIMARY KEY,
    ticket_ref    text        NOT NULL,
    round         smallint    NOT NULL,
    citizen_key   text        NOT NULL,
    -- The citizen key an SMS from the number texted carries (the key of the contact the
    -- number came from): what a reply is matched on.
    reply_key     text        NOT NULL,
    -- How it was asked: chat (a chat ticket's open session, Art. 16) or sms.
    via           text        NOT NULL DEFAULT 'sms',
    -- The unit rated (the lead unit at closure).
    unit          text,
    -- asked (the text or chat message is on its way), waiting (the gateway reported it
    -- sent or delivered: the window
    -- runs), rated, defaulted (no reply in the window: satisfied), not_sent (no number to
    -- ask), undelivered (the carrier could not deliver it: it never defaults).
    state         text        NOT NULL,
    -- When it was asked for, then when the gateway reported it sent.
    sent_at       timestamptz NOT NULL,
    -- No valid reply by then counts as satisfied (Art. 16); set when it was sent.
    due_at        timestamptz NOT NULL,
    -- The one clarifying SMS after an unclear reply was sent.
    clarified     boolean     NOT NULL DEFAULT false,
    rating        text,
    -- sms_reply, default, revisit_call, revisit_agent.
    rating_source text,
    rated_at      timestamptz,
    -- A supervisor upheld the unit's appeal: the rating does not count against the unit
    -- (Art. 17).
    appeal_upheld boolean     NOT NULL DEFAULT false,
    UNIQUE (ticket_ref, round)
);
CREATE INDEX surveys_open ON surveys (reply_key, sent_at) WHERE state IN ('asked', 'waiting');

-- Survey replies (an SMS, or a chat rating), and rating-shaped texts with no survey to
-- answer, kept whole: nothing a citizen sent is dropped.
CREATE TABLE survey_replies (
    -- The SMS's draft, or the chat reply's contact.
    source_id   uuid        PRIMARY KEY,
    ticket_ref  text        NOT NULL,
    survey_id   uuid,
    citizen_key text        NOT NULL,
    text        text        NOT NULL,
    -- rating, unclear, unmatched (no open survey).
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL
);

-- A revisit of a dissatisfied rating (Art. 17): by automated call or by an agent.
CREATE TABLE revisits (
    id         uuid        PRIMARY KEY,
    ticket_ref text        NOT NULL,
    survey_id  uuid        NOT NULL UNIQUE,
    mode       text        NOT NULL,
    -- open, done (rated again), ended (three failed attempts), closed (a redo began).
    state      text        NOT NULL,
    attempts   integer     NOT NULL DEFAULT 0,
    outcome    text,
    opened_at  timestamptz NOT NULL,
    ended_at   timestamptz,
    -- Each attempt: when, how, by whom.
    log        jsonb       NOT NULL DEFAULT '[]'
);
CREATE INDEX revisits_open ON revisits (opened_at) WHERE state = 'open';

-- A unit's appeal of a dissatisfied rating (Art. 17), one per survey.
CREATE TABLE appeals (
    id         uuid        PRIMARY KEY,
    ticket_ref text        NOT NULL,
    survey_id  uuid        NOT NULL UNIQUE,
    unit       text        NOT NULL,
    filed_by   text        NOT NULL,
    evidence   text        NOT NULL,
    filed_at   timestamptz NOT NULL,
    -- pending, upheld, rejected.
    state      text        NOT NULL,
    decided_by text,
    decided_at timestamptz,
    note       text
);
CREATE INDEX appeals_pending ON appeals (filed_at) WHERE state = 'pending';

-- The durable clocks of the follow-up: the 24-hour survey default, revisit attempts and
-- their retry gaps, a revisit call's result timeout. Derived ids: a clock armed twice is
-- one row. The leader runs due rows (FOR UPDATE SKIP LOCKED), each in the transaction
-- that marks it done.
CREATE TABLE jobs (
    id         uuid        PRIMARY KEY,
    kind       text        NOT NULL,
    ticket_ref text        NOT NULL,
    due_at     timestamptz NOT NULL,
    done_at    timestamptz,
    args       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE done_at IS NULL;
