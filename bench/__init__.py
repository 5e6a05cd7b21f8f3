"""Benchmarks of the notification service (`make bench`); see bench/README.md."""
