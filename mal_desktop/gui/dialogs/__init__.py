"""Dialogs of the desktop app: errors, questions, About, the demo-zoo offer with progress, the
MAL study."""
