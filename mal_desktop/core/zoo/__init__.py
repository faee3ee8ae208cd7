"""Demo-zoo builder: trains the built-in zoo from the architecture registry and indexes it."""
