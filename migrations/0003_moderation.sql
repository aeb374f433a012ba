-- Moderation: per-server safety filter and prompt filter, bans, the mod-log, and an audit trail.

-- One row per server that changed a setting; a server without a row has the defaults.
CREATE TABLE guild_settings (
    guild_id          INTEGER PRIMARY KEY,
    -- What happens to a flagged image: block (a notice instead), spoiler, off (posted as is).
    -- spoiler and off only take effect in age-restricted channels (the bot enforces it).
    nsfw_mode         TEXT    NOT NULL DEFAULT 'block' CHECK (nsfw_mode IN ('block', 'spoiler', 'off')),
    nsfw_threshold    REAL,               -- NULL: the classifier's default
    modlog_channel_id INTEGER,
    moderator_role_id INTEGER
);

-- A channel's own safety filter mode, overriding its server's.
CREATE TABLE channel_settings (
    channel_id INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    nsfw_mode  TEXT    NOT NULL CHECK (nsfw_mode IN ('block', 'spoiler', 'off'))
);
CREATE INDEX channel_settings_by_guild ON channel_settings (guild_id);

-- The prompt filter: whole words (stored folded) and patterns, per server.
CREATE TABLE blocked_terms (
    guild_id INTEGER NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('word', 'pattern')),
    term     TEXT    NOT NULL,
    added_by INTEGER NOT NULL,
    added_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (guild_id, kind, term)
);

-- Members barred from the bot in a server.
CREATE TABLE bans (
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    banned_by INTEGER NOT NULL,
    reason    TEXT    NOT NULL DEFAULT '',
    banned_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (guild_id, user_id)
);

-- Every moderation change: who, when, what, old -> new (NULL where there was nothing).
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    actor_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,   -- filter.mode, filter.threshold, words.add, ban, ...
    target     TEXT,               -- the channel, word or member it applies to
    old_value  TEXT,
    new_value  TEXT,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX audit_log_by_guild ON audit_log (guild_id, id DESC);

-- The safety policy each job ran under: the effective mode in its channel and the threshold.
ALTER TABLE jobs ADD COLUMN nsfw_mode TEXT;
ALTER TABLE jobs ADD COLUMN nsfw_threshold REAL;

-- Jobs a member erased with /forget: only the number stays, so that buttons on the old results
-- can say the job was erased rather than that it never existed.
CREATE TABLE erased_jobs (
    job_id    INTEGER PRIMARY KEY,
    erased_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX jobs_by_guild_user ON jobs (guild_id, user_id, id DESC);
