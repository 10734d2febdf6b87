"""Stage 05, blocking: lambda fixed harm-blind, then every arm on every history and seed."""
