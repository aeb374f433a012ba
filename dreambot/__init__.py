"""Dreambot: Stable Diffusion in Discord. Code shared by the bot and the engine; imports neither."""
