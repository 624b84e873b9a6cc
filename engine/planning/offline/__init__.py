"""The offline planner and its word tables: no network, no model."""
