-- The durable queue: jobs left queued or running when the bot stops run again at the next start.

-- Set when a member (or a moderator) cancelled the job; its status is then 'failed'.
ALTER TABLE jobs ADD COLUMN cancelled_by INTEGER;
-- The message that says the job is queued (the deferred answer, or a reply in the channel), so
-- that a job restored after a restart can answer next to it.
ALTER TABLE jobs ADD COLUMN notice_message_id INTEGER;
