"""Built-in architecture families (a registry) and the demo-zoo builder."""
