-- How the engine read a job's prompt: its tokens, and the chunks of the text encoder's length
-- (75 for CLIP) they took. Long prompts are read whole, chunk by chunk; /info says how many.
-- NULL for jobs made before this release, and for models whose prompts are not read in chunks.
ALTER TABLE jobs ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE jobs ADD COLUMN prompt_chunks INTEGER;
