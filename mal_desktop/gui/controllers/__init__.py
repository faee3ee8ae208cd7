"""What the main window does, as controllers it owns and that can live without it.

Each is a QObject holding its own state and telling the window (and each other) what changed
through signals: :class:`~.session.SessionController` (workspace, project path, unsaved state,
autosave, engine), :class:`~.files.FilesController` (open, save, recent files, demo zoo,
recovery), :class:`~.run.RunController` (run a step's curve, export the merged model) and
:class:`~.evaluation.EvaluationController` (evaluation matrix, MAL study). All long work goes
through the one :class:`~mal_desktop.gui.job_queue.JobQueue`.
"""
