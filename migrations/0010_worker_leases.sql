-- Jobs run by workers on other hosts (NATS_URL): the lease a job was last handed out under (random;
-- a result is taken only under the lease the bot handed out, even after a restart) and the name of
-- the worker that holds or held it. NULL for jobs run by the bot's own engines.
ALTER TABLE jobs ADD COLUMN lease TEXT;
ALTER TABLE jobs ADD COLUMN worker TEXT;
