"""Views and panels over the item models: layer tree panes and the assembly panel."""
