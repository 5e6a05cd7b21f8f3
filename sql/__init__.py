"""SQL shipped with the package; see docs/migrations.md for the freezing rule."""
