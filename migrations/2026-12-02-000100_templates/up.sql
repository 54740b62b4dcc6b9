-- The official account's templates, as WeChat's `get_all_private_template` last listed them.
-- `content` is the source of truth for a template's keywords: the service reads them from it
-- each time rather than storing a copy that could disagree.
--
-- A template WeChat stops listing, or that a send was refused for with 40037 (a category
-- change deletes templates overnight), is marked gone rather than deleted: messages name it by
-- its id, and a template that reappears in the list is simply live again.
CREATE TABLE templates (
    template_id      TEXT        PRIMARY KEY,
    title            TEXT        NOT NULL,
    primary_industry TEXT        NOT NULL DEFAULT '',
    deputy_industry  TEXT        NOT NULL DEFAULT '',
    content          TEXT        NOT NULL,
    example          TEXT        NOT NULL DEFAULT '',
    -- When a sync last found it in WeChat's list.
    synced_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    gone_at          TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
