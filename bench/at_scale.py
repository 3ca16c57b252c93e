"""B15 at scale: N items x 4 settings x 32 tokens on the default model, end to end."""
