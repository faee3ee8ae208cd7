"""Dialogs of the desktop app: questions, About, the demo-zoo offer with progress, the MAL study.

(The error message box is gui/error_box.py: gui/log.py shows it, and these dialogs log.)"""
