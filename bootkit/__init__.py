"""The `bootkit` command: one entry point that dispatches to each subsystem's own CLI module."""
