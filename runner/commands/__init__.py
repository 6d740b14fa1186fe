"""The `scriptorium` command line: click commands, thin over the catalog, the queue and the engine."""
