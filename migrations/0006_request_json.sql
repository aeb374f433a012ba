-- A job's request is stored once, as the JSON of `dreambot.request.GenerateRequest` (its pictures
-- are files, `bot/images.py`), and read back as it was made: a new request field needs no column.
-- The row keeps beside it only what the bot queries, or what happens to the job after it is asked
-- for. Existing rows are converted: the request columns become the JSON, and a picture-based job
-- keeps no size of its own (its size comes from its picture, as it always did).
CREATE TABLE jobs_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER NOT NULL,
    guild_id            INTEGER,            -- NULL in direct messages
    channel_id          INTEGER,
    interaction_id      INTEGER,
    message_id          INTEGER,            -- the posted result, once known
    notice_message_id   INTEGER,            -- the queued notice, for a job restored after a restart
    request             TEXT    NOT NULL,   -- GenerateRequest as JSON, without its pictures
    -- What the member did to start the job: a command (dream, inpaint, outpaint, interpolate) or a
    -- button/reaction on an earlier result (reroll, vary, upscale, left, right, up, down).
    action              TEXT    NOT NULL DEFAULT 'dream',
    parent_job_id       INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    parent_image        INTEGER,            -- which picture of the parent (0-based) it started from
    -- queued -> running -> delivering -> done | filtered; or failed (a cancel is a failure with cancelled_by)
    status              TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'delivering', 'done', 'failed', 'filtered')),
    nsfw_mode           TEXT,               -- the safety filter mode the job runs under
    -- The result: the model and size the engine used, one flag and score per picture, and the
    -- score of what it kept from its input picture.
    model               TEXT,
    width               INTEGER,
    height              INTEGER,
    nsfw_flags          TEXT,               -- JSON list, one boolean per picture
    nsfw_scores         TEXT,               -- JSON list, one number per picture
    source_score        REAL,
    engine_seconds      REAL,               -- the engine's own time for the job
    error               TEXT,
    cancelled_by        INTEGER,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at          TEXT,
    finished_at         TEXT,
    deleted_at          TEXT                -- the result message was deleted with Delete
);

INSERT INTO jobs_new (id, user_id, guild_id, channel_id, interaction_id, message_id, notice_message_id, request,
                      action, parent_job_id, parent_image, status, nsfw_mode, model, width, height, nsfw_flags,
                      nsfw_scores, source_score, engine_seconds, error, cancelled_by, created_at, started_at,
                      finished_at, deleted_at)
SELECT id, user_id, guild_id, channel_id, interaction_id, message_id, notice_message_id,
       json_object(
           'prompt', prompt,
           'negative_prompt', negative_prompt,
           'num_inference_steps', num_inference_steps,
           'guidance_scale', guidance_scale,
           'width', CASE WHEN mode IN ('txt2img', 'interpolate') THEN width END,
           'height', CASE WHEN mode IN ('txt2img', 'interpolate') THEN height END,
           'seed', seed,
           'scheduler', scheduler,
           'num_images', num_images,
           'mode', mode,
           'image', NULL,
           'mask', NULL,
           'strength', strength,
           'direction', coalesce(direction, 'all'),
           'amount', coalesce(amount, 0),
           'end_prompt', end_prompt,
           'end_seed', end_seed,
           'frames', coalesce(frames, 8),
           'style', style,
           'nsfw_threshold', nsfw_threshold,
           'keep_flagged', json(CASE WHEN nsfw_mode IN ('spoiler', 'off') THEN 'true' ELSE 'false' END),
           'source_flagged', json(CASE WHEN source_flagged THEN 'true' ELSE 'false' END)
       ),
       action, parent_job_id, parent_image, status, nsfw_mode, model, width, height, nsfw_flags,
       nsfw_scores, source_score, engine_seconds, error, cancelled_by, created_at, started_at,
       finished_at, deleted_at
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
