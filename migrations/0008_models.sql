-- Models (/mod model, /settings): which model a job gets when its command does not say.

-- A server's default model (NULL: the bot's default, SD_MODEL or models.toml's).
ALTER TABLE guild_settings ADD COLUMN model TEXT;

-- A channel's own default model, and the models it allows (a thread follows its parent channel).
CREATE TABLE channel_models (
    channel_id INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    model      TEXT,                 -- NULL: the server's default
    allowed    TEXT                  -- a JSON list of model names; NULL: every model
);
CREATE INDEX channel_models_by_guild ON channel_models (guild_id);

-- Each member's own defaults (/settings), as JSON: model, sampler, steps, guidance, width,
-- height, aspect, style, negative. Erased by /forget.
CREATE TABLE member_settings (
    user_id    INTEGER PRIMARY KEY,
    settings   TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
