"""Run settings: the schema, profiles, validation, sources; names shared project-wide."""
