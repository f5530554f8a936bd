"""The scenario models (one module each) and their TOML files (`NAME.toml`)."""
