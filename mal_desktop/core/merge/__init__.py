"""Assembly plans (document, validation) and merge methods (registry)."""
