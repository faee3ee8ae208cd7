"""Qt item models that adapt core documents (layer trees, the assembly plan)."""
