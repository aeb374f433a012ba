-- Nothing lost between the engine and the channel: a finished job is 'delivering' until its result
-- is posted (its pictures are kept on disk meanwhile), and the next start posts what was made but
-- not delivered. SQLite cannot change a CHECK constraint in place, so the table is rebuilt as its
-- documented procedure says (the migration runner turns foreign keys off around migrations).
-- Also: whether a job started from a flagged picture (the flag travels down chains of derived
-- jobs), the safety score of what a job kept from its input picture, and the fingerprints of
-- flagged pictures that were posted (a member who uploads one again is recognised).
CREATE TABLE jobs_new (
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
    width               INTEGER,
    height              INTEGER,
    seed                INTEGER NOT NULL,
    scheduler           TEXT    NOT NULL,
    num_images          INTEGER NOT NULL,
    model               TEXT,
    -- queued -> running -> delivering -> done | filtered; or failed (a cancel is a failure with cancelled_by)
    status              TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'delivering', 'done', 'failed', 'filtered')),
    nsfw_flags          TEXT,
    nsfw_scores         TEXT,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at          TEXT,
    finished_at         TEXT,
    engine_seconds      REAL,
    error               TEXT,
    mode                TEXT    NOT NULL DEFAULT 'txt2img',
    action              TEXT    NOT NULL DEFAULT 'dream',
    parent_job_id       INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    parent_image        INTEGER,
    strength            REAL,
    direction           TEXT,
    amount              INTEGER,
    end_prompt          TEXT,
    end_seed            INTEGER,
    frames              INTEGER,
    style               TEXT    NOT NULL DEFAULT '',
    deleted_at          TEXT,
    nsfw_mode           TEXT,
    nsfw_threshold      REAL,
    cancelled_by        INTEGER,
    notice_message_id   INTEGER,
    source_flagged      INTEGER NOT NULL DEFAULT 0,  -- started from a flagged picture: its pictures are flagged
    source_score        REAL                         -- the classifier's score of what it kept from its input
);

INSERT INTO jobs_new (id, user_id, guild_id, channel_id, interaction_id, message_id, prompt, negative_prompt,
                      num_inference_steps, guidance_scale, width, height, seed, scheduler, num_images, model, status,
                      nsfw_flags, nsfw_scores, created_at, started_at, finished_at, engine_seconds, error, mode,
                      action, parent_job_id, parent_image, strength, direction, amount, end_prompt, end_seed, frames,
                      style, deleted_at, nsfw_mode, nsfw_threshold, cancelled_by, notice_message_id)
SELECT id, user_id, guild_id, channel_id, interaction_id, message_id, prompt, negative_prompt,
       num_inference_steps, guidance_scale, width, height, seed, scheduler, num_images, model, status,
       nsfw_flags, nsfw_scores, created_at, started_at, finished_at, engine_seconds, error, mode,
       action, parent_job_id, parent_image, strength, direction, amount, end_prompt, end_seed, frames,
       style, deleted_at, nsfw_mode, nsfw_threshold, cancelled_by, notice_message_id
FROM jobs;

-- Job numbers are never reused (AUTOINCREMENT): an erased job's number must keep meaning "erased".
CREATE TEMP TABLE jobs_sequence AS SELECT seq FROM sqlite_sequence WHERE name = 'jobs';
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
DELETE FROM sqlite_sequence WHERE name = 'jobs';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'jobs', max(coalesce((SELECT seq FROM jobs_sequence), 0), coalesce((SELECT max(id) FROM jobs), 0));
DROP TABLE jobs_sequence;

CREATE INDEX jobs_by_user ON jobs (user_id, id DESC);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_message ON jobs (message_id);
CREATE INDEX jobs_by_guild_user ON jobs (guild_id, user_id, id DESC);

-- Flagged pictures posted where flagged pictures may be shown (spoiler, off): their fingerprints
-- (bot/fingerprint.py), so that one brought back as an attachment counts as flagged. Kept when the
-- job is erased: a fingerprint says nothing of the member or the prompt.
CREATE TABLE flagged_pictures (
    job_id      INTEGER NOT NULL,
    picture     INTEGER NOT NULL,
    guild_id    INTEGER NOT NULL,   -- matched only in its own server (each has its own threshold)
    fingerprint INTEGER NOT NULL,   -- 64 bits, as a signed integer
    PRIMARY KEY (job_id, picture)
);
CREATE INDEX flagged_pictures_by_guild ON flagged_pictures (guild_id);
