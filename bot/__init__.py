"""The Discord side of Dreambot. Never imports torch or diffusers."""
