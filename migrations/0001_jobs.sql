-- Every /dream is a row, from the moment it is accepted; its status moves
-- queued -> running -> done | failed | filtered (every image withheld by the safety checker).
CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER NOT NULL,
    guild_id            INTEGER,            -- NULL in direct messages
    channel_id          INTEGER,
    interaction_id      INTEGER,
    message_id          INTEGER,            -- the posted result, once known
    prompt              TEXT    NOT NULL,
    negative_prompt     TEXT    NOT NULL DEFAULT '',
    num_inference_steps INTEGER NOT NULL,
    guidance_scale      REAL    NOT NULL,
    width               INTEGER,            -- NULL until the engine reports the native size it used
    height              INTEGER,
    seed                INTEGER NOT NULL,
    scheduler           TEXT    NOT NULL,
    num_images          INTEGER NOT NULL,
    model               TEXT,
    status              TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'done', 'failed', 'filtered')),
    nsfw_flags          TEXT,               -- JSON list, one boolean per image
    nsfw_scores         TEXT,               -- JSON list, one number per image
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at          TEXT,
    finished_at         TEXT,
    engine_seconds      REAL,               -- the engine's own time for the job
    error               TEXT
);

CREATE INDEX jobs_by_user ON jobs (user_id, id DESC);
CREATE INDEX jobs_by_status ON jobs (status);

-- Small facts the bot keeps between runs (the fingerprint of the registered commands, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
