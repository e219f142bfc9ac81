"""The `concordkv` command."""
