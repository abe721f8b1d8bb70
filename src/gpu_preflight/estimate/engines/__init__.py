"""One module per engine: what that engine allocates, with its sources and measured constants."""
