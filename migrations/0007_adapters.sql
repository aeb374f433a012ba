-- LoRAs and embeddings a server's moderators turned off (/mod adapters): prompts that use one are
-- refused in that server. Names are file stems, matched in any case, as prompts name them.
CREATE TABLE disabled_adapters (
    guild_id    INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('lora', 'embedding')),
    name        TEXT    NOT NULL COLLATE NOCASE,
    disabled_by INTEGER NOT NULL,
    disabled_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (guild_id, kind, name)
);
