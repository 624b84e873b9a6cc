"""The SQLite store: schema, records, and the one class every read and write goes through."""
