-- Image modes and result controls: what each job did, where it came from, and the mode's options.
ALTER TABLE jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'txt2img';
-- What the member did to start the job: a command (dream, inpaint, outpaint, interpolate) or a
-- button/reaction on an earlier result (reroll, vary, upscale).
ALTER TABLE jobs ADD COLUMN action TEXT NOT NULL DEFAULT 'dream';
ALTER TABLE jobs ADD COLUMN parent_job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL;
-- Which picture of the parent (0-based) a variation or upscale started from.
ALTER TABLE jobs ADD COLUMN parent_image INTEGER;
ALTER TABLE jobs ADD COLUMN strength REAL;
ALTER TABLE jobs ADD COLUMN direction TEXT;
ALTER TABLE jobs ADD COLUMN amount INTEGER;
ALTER TABLE jobs ADD COLUMN end_prompt TEXT;
ALTER TABLE jobs ADD COLUMN end_seed INTEGER;
ALTER TABLE jobs ADD COLUMN frames INTEGER;
ALTER TABLE jobs ADD COLUMN style TEXT NOT NULL DEFAULT '';
-- Set when the result message was deleted with the Delete button or reaction.
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;

-- Buttons and reactions find their job from the message they are on.
CREATE INDEX jobs_by_message ON jobs (message_id);
