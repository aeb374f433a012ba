"""The image engine: a diffusers pipeline in its own process. Never imports discord."""
