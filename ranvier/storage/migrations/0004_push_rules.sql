-- Push rules (Client-Server API, "Push Rules"; ranvier/storage/push_rules.py).
-- The server-default rules live in code (ranvier/core/push_rules.py); only a
-- user's own rules and their changes to the defaults are stored.

-- A user's own rules. priority orders the rules of one (user, kind): 0 is the
-- most important. conditions and actions are JSON arrays; pattern is set for
-- content rules only.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority BIGINT NOT NULL,
    conditions TEXT NOT NULL,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default rules: NULL keeps the default.
CREATE TABLE push_rule_default_overrides (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
