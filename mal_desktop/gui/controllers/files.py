"""Opening and saving: model files, projects, recent files, the demo zoo, crash recovery.

File contents are read in the worker (``tasks.load_models_job``); only small JSON files
(projects) are read in the GUI thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from ...core.errors import MalError
from ...core.project.demo import (DEMO_DATA, LM_DEMO_DATA, pick_demo_models,
                                  pick_lm_demo_models, suggest_first_step)
from ...core.project.document import (PROJECT_SUFFIX, Project, ProjectError, load_project,
                                      save_project)
from ...core.project.recovery import discard_recovery, find_recoveries, load_recovery
from .. import tasks
from ..dialogs import ask
from ..dialogs.demo_zoo import DemoZooDialog
from ..job_queue import JobQueue
from ..log import report_error, report_exception
from ..settings import Settings
from .session import SessionController

if TYPE_CHECKING:  # the workspace imports the engine's plan (torch): not at start-up
    from ..workspace import ModelEntry

LOG = logging.getLogger("mal_desktop.files")
MODEL_SUFFIXES = (".safetensors", ".pt2", ".pt", ".pth", ".bin")
# A Hugging Face model folder is opened by picking its config.json (file dialogs pick files).
MODEL_FILTER = ("Models (*.safetensors *.pt2 *.pt *.pth *.bin config.json);;"
                "Hugging Face model folders (config.json);;All files (*)")
PROJECT_FILTER = f"MAL projects (*{PROJECT_SUFFIX})"

__all__ = ["FilesController", "MODEL_SUFFIXES", "PROJECT_SUFFIX"]


@dataclass(frozen=True)
class _Demo:
    """What differs between the two demo zoos (the dialog's texts live in dialogs/demo_zoo)."""

    what: str  # "the demo zoo", in messages
    build_job: Callable[..., Any]  # tasks job building it into a folder
    pick: Callable[[Any], tuple[Any, list[Any]]]  # index -> (base, zoo models)
    data: str  # the curves' data set once opened
    opened: str  # status-bar message once opened


_DEMOS = {
    "digits": _Demo("the demo zoo", tasks.build_demo_zoo_job, pick_demo_models, DEMO_DATA,
                    "Demo zoo open: drag a layer from a zoo tab onto a base layer, or press Run "
                    "(F5) for the example step"),
    "language": _Demo("the language demo zoo", tasks.build_lm_demo_zoo_job, pick_lm_demo_models,
                      LM_DEMO_DATA,
                      f"Language demo zoo open, curves on {LM_DEMO_DATA} (loss per token: the "
                      "log of the perplexity): drag a layer from a zoo tab onto a base layer, "
                      "or press Run (F5) for the example step"),
}


@dataclass
class _EarlyEntries:
    """What one load showed before it ended (tasks.EarlyEntry), by (role, file): previews
    still standing, with the entry each replaced (None: none), and models loaded in their
    place."""

    previews: dict[tuple[str, str], tuple[ModelEntry, ModelEntry | None]] = field(
        default_factory=dict)
    loaded: dict[tuple[str, str], ModelEntry] = field(default_factory=dict)
    data_before: str | None = None  # the data set a base preview replaced (put back with it)
    data_note: str = ""  # what the switch of data set said, repeated when the load ends


def _model_folder(path: str) -> Path | None:
    """The Hugging Face model folder ``path`` names (the folder or its config.json), else None.
    Checked here by name: the loader (core.io.hf_folder) pulls torch in, not for start-up."""
    p = Path(path)
    if p.name == "config.json" and p.is_file():
        return p.parent
    return p if p.is_dir() and (p / "config.json").is_file() else None


def _check_models_exist(project: Project, path: str | Path) -> None:
    """Raise ProjectError naming the project and each of its models whose file is gone."""
    plan = project.plan
    models = ([("the base model", plan.base)] if plan.base else []) + [
        (f"zoo model {name!r}", p) for name, p in plan.zoo.items()]
    gone = [f"{what} ({p})" for what, p in models if not Path(p).exists()]
    if gone:
        raise ProjectError(f"{path}: {'; '.join(gone)}: no such file. Put the file"
                           f"{'s' if len(gone) > 1 else ''} back where the project says, or "
                           "open the models and build the plan again")


def _model_name(path: str) -> str:
    """A model's display name: a folder's own name, else the file's stem."""
    folder = _model_folder(path)
    return folder.name if folder is not None else Path(path).stem


class FilesController(QObject):
    """Open and save for the session.

    Parameters: session - the session files are opened into and saved from; jobs - the job
    queue (files load in the worker); settings - recent files and the last folder;
    dialog_parent - the window dialogs and questions belong to.
    Signals: ``modelsOpened(list[str])`` - names of the models just added; ``projectOpened()``
    - a project or recovered work replaced the session; ``recentChanged()`` - the recent-files
    list changed; ``message(str, int timeout_ms)`` for the status bar.
    """

    modelsOpened = Signal(list)
    projectOpened = Signal()
    recentChanged = Signal()
    message = Signal(str, int)

    def __init__(self, session: SessionController, jobs: JobQueue, settings: Settings,
                 dialog_parent: QWidget | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.jobs = jobs
        self.settings = settings
        self.dialog_parent = dialog_parent
        self.demo_dialog: DemoZooDialog | None = None
        self._watched: Any = None
        # the user opened something (a file, a project, a demo) before start-up was done: the
        # first launch's demo offer would pop up over it
        self._user_opened = False
        session.workspaceReady.connect(self._watch_workspace)
        if session.workspace is not None:
            self._watch_workspace(session.workspace)

    @staticmethod
    def openable(paths: Iterable[str]) -> list[str]:
        """The ``paths`` this app opens (model files and projects, by suffix, and Hugging Face
        model folders), in order."""
        return [p for p in paths if Path(p).suffix.lower() in (*MODEL_SUFFIXES, PROJECT_SUFFIX)
                or _model_folder(p) is not None]

    def _say(self, text: str, timeout_ms: int = 6000) -> None:
        self.message.emit(text, timeout_ms)

    def _remember(self, path: str | Path) -> None:
        self.settings.add_recent_file(path)
        self.recentChanged.emit()

    # -- opening models and projects ------------------------------------------------------------
    def _ask_open(self, title: str, filter_: str, many: bool = False) -> list[str]:
        start = self.settings.last_dir
        if many:
            files, _ = QFileDialog.getOpenFileNames(self.dialog_parent, title, start, filter_)
        else:
            file, _ = QFileDialog.getOpenFileName(self.dialog_parent, title, start, filter_)
            files = [file] if file else []
        if files:
            self.settings.last_dir = str(Path(files[0]).parent)
        return files

    @Slot()
    def choose_base(self) -> None:
        """Ask for a model file and open it as the base."""
        files = self._ask_open("Open Base Model", MODEL_FILTER)
        if files:
            self.load_models([tasks.LoadRequest("base", _model_name(files[0]), files[0])])

    @Slot()
    def choose_zoo(self) -> None:
        """Ask for model files and add them to the zoo."""
        files = self._ask_open("Add Zoo Models", MODEL_FILTER, many=True)
        if files:
            self.load_models([tasks.LoadRequest("zoo", _model_name(f), f) for f in files])

    @Slot()
    def choose_project(self) -> None:
        """Ask for a project file and open it."""
        files = self._ask_open("Open Project", PROJECT_FILTER)
        if files:
            self.open_project(files[0])

    def open_recent(self, path: str) -> None:
        """Open a file from the recent list; a file that is gone leaves the list."""
        if not Path(path).exists():
            self.settings.remove_recent_file(path)
            self.recentChanged.emit()
            report_error(f"{path}: the file no longer exists", parent=self.dialog_parent)
            return
        self.open_paths([path])

    def open_paths(self, paths: Iterable[str], keep_base: bool = False) -> None:
        """Open files given on the command line, dropped or picked from the recent list.

        A project replaces the session; model files become the base (the first, when there
        is no base yet and ``keep_base`` is False) and zoo models.
        """
        paths = [str(Path(p).expanduser()) for p in paths]
        projects = [p for p in paths if p.endswith(PROJECT_SUFFIX)]
        if projects:
            if len(paths) > 1:
                self._say("Opening the project only; open other files afterwards")
            self.open_project(projects[0])
            return
        ws = self.session.workspace
        has_base = keep_base or (ws is not None and ws.base is not None)
        requests = []
        for i, p in enumerate(paths):
            role = "base" if i == 0 and not has_base else "zoo"
            requests.append(tasks.LoadRequest(role, _model_name(p), p))
        if requests:
            self.load_models(requests)

    def load_models(self, requests: list[tasks.LoadRequest]) -> None:
        """Load model files in the worker, then add them to the workspace. A large model's
        tree shows as soon as its headers are read, and the loaded model takes its place as
        soon as its weights are (:class:`tasks.EarlyEntry`); a failed or cancelled load takes
        back the previews still standing."""
        self._user_opened = True
        n = len(requests)
        name = f"Loading {Path(requests[0].path).name}" if n == 1 else f"Loading {n} models"
        early = _EarlyEntries()
        self.jobs.submit(partial(tasks.load_each_job, requests=tuple(requests)), name,
                         partial(self._models_loaded, early),
                         partial(self._previews_taken_back, early),
                         partial(self._show_early, early))

    def _show_early(self, early: "_EarlyEntries", event: Any) -> None:
        if not isinstance(event.payload, tasks.EarlyEntry):
            return
        role, entry = event.payload.role, event.payload.entry
        ws = self.session.install_workspace()
        key = (role, entry.path_text)
        if entry.weights_read:  # the loaded model takes its preview's place (and name)
            preview, _ = early.previews.pop(key)
            entry = replace(entry, name=preview.name)
            ws.take_loaded(role, preview, entry)
            early.loaded[key] = entry
            self.session.mark_dirty()
            return
        if role == "base":
            old = ws.base
            ws.set_base(entry)
        else:
            old = ws.zoo.get(entry.name)  # replaced when it is the same file (a reload)
            entry = ws.add_zoo(entry)
            if entry.name != event.payload.entry.name:  # another file has the name: beside it
                old = None
        early.previews[key] = (entry, old)
        note = ""
        if role == "base":
            data = self.session.data
            note = self._fit_data(entry)
            if note:
                early.data_before, early.data_note = data, note
        self._say(f"{entry.name}: layers read from the headers; reading its weights\u2026"
                  + note, 0)

    def _fit_data(self, base: "ModelEntry") -> str:
        """Give a new base a data set it can read: a language model cannot be scored on
        images, nor an image model on text, and Run would only find out after the assembly.
        Returns what to tell the user ("" when the data set already fits)."""
        from ...core.evaluate.datasets import is_text_dataset

        reads_tokens = base.model.id_range() is not None
        if reads_tokens == is_text_dataset(self.session.data):
            return ""
        data = LM_DEMO_DATA if reads_tokens else DEMO_DATA
        self.session.set_data(data)
        self.session.mark_dirty()
        kind = "token ids" if reads_tokens else "images or features, not text"
        return f"; curves now on {data}: {base.name} reads {kind}"

    def _previews_taken_back(self, early: "_EarlyEntries") -> None:
        self._take_back(early, list(early.previews))

    def _take_back(self, early: "_EarlyEntries", keys: list[tuple[str, str]]) -> None:
        """Remove the previews of ``keys`` (role, path) whose models did not load."""
        ws = self.session.workspace
        for key in reversed(keys):
            entry, old = early.previews.pop(key)
            role = key[0]
            if ws is not None:
                ws.take_back(role, entry, old)
                if role == "base" and early.data_before is not None:
                    # the base that comes back was read with the data set it had
                    self.session.set_data(early.data_before)

    def _models_loaded(self, early: "_EarlyEntries", outcome: tasks.LoadedEach) -> None:
        entries = outcome.entries
        if outcome.failed:
            failed = {path for path, _ in outcome.failed}
            self._take_back(early, [key for key in early.previews if key[1] in failed])
            lines = [f"{path}: {why}" if not why.startswith(path) else why
                     for path, why in outcome.failed]
            opened = (f"The other {len(entries)} opened." if entries else "")
            report_error(f"Cannot open {len(lines)} of {len(lines) + len(entries)} files:\n"
                         + "\n".join(lines) + ("\n" + opened if opened else ""),
                         title="Cannot open some files" if entries else "Cannot open the files",
                         parent=self.dialog_parent)
            if not entries:
                return
        kept = self._apply_entries(tuple((role, e) for role, e in entries
                                         if (role, e.path_text) not in early.loaded))
        for _role, e in entries:
            self.settings.add_recent_file(e.path_text)
        self.recentChanged.emit()
        self.session.mark_dirty()
        shown = [*early.loaded.values(), *kept]  # under the names the workspace gave them
        names = [e.name for e in shown]
        several = [e for e in shown if e.outputs > 1]
        base = self.session.workspace.base
        note = early.data_note or (self._fit_data(base) if any(base is e for e in shown)
                                   else "")
        if several:  # the first output is a guess: say so where the user looks
            e = several[0]
            self._say(f"Opened {', '.join(names)}. {e.name} returns {e.outputs} outputs; output "
                      f"{e.output_index} is used as the logits \u2014 choose another above its "
                      "layers" + note, 20000)
        else:
            self._say(f"Opened {', '.join(names)}" + note, 10000 if note else 6000)
        self.modelsOpened.emit(names)

    # -- which output is the logits --------------------------------------------------------------
    @Slot(object)
    def _watch_workspace(self, ws: Any) -> None:
        if ws is not self._watched:
            self._watched = ws
            ws.outputWanted.connect(self.choose_output)

    @Slot(str, str, int)
    def choose_output(self, role: str, name: str, index: int) -> None:
        """Reload model ``name`` (in ``role``) with output ``index`` as its logits in the
        worker, then swap it in (undoably). A model that is not a file cannot be reloaded."""
        ws = self.session.workspace
        entry = ws.entry(name, role) if ws is not None else None
        if entry is None:
            return
        if not entry.path_text:
            self._say(f"{name} is only in memory: it cannot be reloaded with another output")
            ws.modelsChanged.emit()  # puts the choice shown back
            return
        request = tasks.LoadRequest(role, name, entry.path_text, index)
        self.jobs.submit(partial(tasks.load_models_job, requests=(request,)),
                         f"Using output {index} of {name}", partial(self._output_loaded, role),
                         ws.modelsChanged.emit)  # failed or cancelled: show the old choice

    def _output_loaded(self, role: str, entries: tuple) -> None:
        ws = self.session.workspace
        (_, entry), = entries
        if ws is None or not ws.use_output(role, entry):
            if ws is not None:
                ws.modelsChanged.emit()
            return
        self._say(f"{entry.name}: output {entry.output_index} is the logits "
                  f"({entry.model.num_classes} classes)")

    def _apply_entries(self, entries: tuple) -> list[ModelEntry]:
        """Put loaded entries in the workspace; returns them as kept (a zoo name may have
        got a suffix)."""
        ws = self.session.install_workspace()
        kept = []
        for role, entry in entries:
            if role == "base":
                ws.set_base(entry)
            else:
                entry = ws.add_zoo(entry)
            kept.append(entry)
        return kept

    @Slot()
    def new_project(self) -> None:
        """Start an empty, untitled session (after asking about unsaved changes)."""
        if self.maybe_save():
            self.session.replace_workspace(None)
            self.session.forget_results()
            self.session.mark_clean()

    def maybe_save(self) -> bool:
        """Ask about unsaved changes; False when the user cancelled (or saving failed)."""
        if not self.session.is_dirty():
            return True
        answer = ask.unsaved_changes(self.dialog_parent, self.session.project_name())
        return answer == ask.DISCARD or (answer == ask.SAVE and self.save_project())

    def open_project(self, path: str | Path) -> None:
        """Open the project at ``path`` (its models load in the worker); asks about unsaved
        changes once the file is known to open (a project that cannot does not ask the user to
        give up their work for nothing)."""
        self._user_opened = True
        try:
            project = load_project(path)
            _check_models_exist(project, path)
        except ProjectError as exc:
            report_exception(exc, "Cannot open the project", self.dialog_parent)
            return
        if not self.maybe_save():
            return
        self._load_project(project, Path(path).resolve(), dirty=False)

    def _load_project(self, project: Project, path: Path | None, dirty: bool,
                      after: Callable[[], None] | None = None) -> None:
        plan = project.plan
        # each model loads with the output the project chose as its logits
        requests = ([tasks.LoadRequest("base", Path(plan.base).stem, plan.base, plan.base_output)]
                    if plan.base else [])
        requests += [tasks.LoadRequest("zoo", n, p, plan.zoo_outputs.get(n))
                     for n, p in plan.zoo.items()]
        label = path.name if path else "the recovered project"
        self.jobs.submit(partial(tasks.load_models_job, requests=tuple(requests)),
                         f"Opening {label}",
                         partial(self._project_loaded, project, path, dirty, after))

    def _project_loaded(self, project: Project, path: Path | None, dirty: bool,
                        after: Callable[[], None] | None, entries: tuple) -> None:
        session = self.session
        ws = session.install_workspace()
        session.replace_workspace(path)
        self._apply_entries(entries)
        ws.reset_plan(project.plan)
        session.set_data(project.data)
        grid = project.ui.get("curve_grid")
        if isinstance(grid, int):
            session.set_grid(grid)
        step = project.ui.get("selected_step")
        if isinstance(step, int):
            ws.select_step(step)
        session.forget_results()
        session.mark_clean()
        if dirty:
            session.mark_dirty()
        if path is not None and not dirty:
            self._remember(path)
        blocked = ws.first_blocked_step()
        problem = (f"; step {blocked[0] + 1} cannot run: {blocked[1].reason}"
                   if blocked is not None else "")
        self._say((f"Opened {path.name}" if path is not None and not dirty else
                   "Restored the autosaved project: save it to keep it") + problem,
                  12000 if problem else 6000)
        self.projectOpened.emit()
        if after is not None:
            after()

    def save_project(self) -> bool:
        """Save to the current project file (asks for one the first time); True on success."""
        if self.session.project_path is None:
            return self.save_project_as()
        return self.write_project(self.session.project_path)

    def save_project_as(self) -> bool:
        """Ask for a project file and save to it; True on success."""
        start = str(self.session.project_path
                    or Path(self.settings.last_dir) / f"untitled{PROJECT_SUFFIX}")
        file, _ = QFileDialog.getSaveFileName(self.dialog_parent, "Save Project", start,
                                              PROJECT_FILTER)
        if not file:
            return False
        return self.write_project(Path(file))

    def write_project(self, path: Path) -> bool:
        """Save the session to ``path`` (atomically), which becomes its project file; True on
        success (a failure is reported to the user)."""
        project, _ = self.session.snapshot()
        try:
            written = save_project(project, path)
        except ProjectError as exc:
            report_exception(exc, "Cannot save the project", self.dialog_parent)
            return False
        self.session.project_path = written.resolve()
        self.settings.last_dir = str(written.parent)
        self._remember(written)
        self.session.mark_clean()
        self._say(f"Saved {written}")
        return True

    # -- demo zoo --------------------------------------------------------------------------------
    @Slot()
    def open_demo(self) -> None:
        """Open the demo zoo: straight away when built, else offer to build it."""
        self._user_opened = self.settings.demo_offered = True  # no need to offer it any more
        self.jobs.submit(tasks.demo_status_job, "Looking for the demo zoo",
                         partial(self._show_demo_dialog, offer=False))

    def build_and_open_demo(self, kind: str = "digits") -> None:
        """``--demo [digits|language]``: open that demo zoo, building it first (with progress)
        when needed."""
        status = tasks.demo_status_job if kind == "digits" else tasks.lm_demo_status_job
        self.jobs.submit(status, f"Looking for {_DEMOS[kind].what}",
                         partial(self._show_demo_dialog, offer=False, build=True, kind=kind))

    def offer_demo(self) -> None:
        """First launch: offer to build and open the demo zoo (once)."""
        self.settings.demo_offered = True
        self.jobs.submit(tasks.demo_status_job, "Looking for the demo zoo",
                         partial(self._show_demo_dialog, offer=True))

    @Slot()
    def open_lm_demo(self) -> None:
        """Open the language demo zoo (five small Llama-style LMs, Hugging Face folders in the
        language zoo cache): straight away when built, else offer to build it in the worker,
        with progress and Cancel."""
        self._user_opened = True
        self.jobs.submit(tasks.lm_demo_status_job, "Looking for the language demo zoo",
                         partial(self._show_demo_dialog, offer=False, kind="language"))

    def _show_demo_dialog(self, status: tasks.DemoStatus, offer: bool,
                          build: bool = False, kind: str = "digits") -> None:
        if status.index is not None and not offer:
            # built: opened at once, replacing the session, so unsaved work is asked about
            if self.maybe_save():
                self._open_demo_index(status.index, kind)
            return
        dialog = DemoZooDialog(self.dialog_parent, status.folder, ready=status.index is not None,
                               kind=kind)
        self.demo_dialog = dialog
        dialog.accepted_build.connect(partial(self._demo_accepted, dialog, status))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        if build:  # asked for on the command line: no need to ask again
            self._demo_accepted(dialog, status)

    def _demo_accepted(self, dialog: DemoZooDialog, status: tasks.DemoStatus) -> None:
        if status.index is not None:
            if not self.maybe_save():
                dialog.reject()
                return
            dialog.accept()
            self._open_demo_index(status.index, dialog.kind)
            return
        if not self.maybe_save():
            dialog.reject()
            return
        demo = _DEMOS[dialog.kind]
        self.jobs.submit(partial(demo.build_job, folder=status.folder), f"Building {demo.what}",
                         partial(self._open_demo_index, kind=dialog.kind))
        dialog.attach(self.jobs.runner)

    def _open_demo_index(self, index: Any, kind: str = "digits") -> None:
        demo = _DEMOS[kind]
        try:
            base, zoo = demo.pick(index)
        except MalError as exc:
            report_exception(exc, f"Cannot open {demo.what}", self.dialog_parent)
            return
        requests = [tasks.LoadRequest("base", base.name, str(index.path_of(base.name)))]
        requests += [tasks.LoadRequest("zoo", z.name, str(index.path_of(z.name))) for z in zoo]
        self.jobs.submit(partial(tasks.load_models_job, requests=tuple(requests)),
                         f"Opening {demo.what}", partial(self._demo_loaded, kind=kind))

    def _demo_loaded(self, entries: tuple, kind: str = "digits") -> None:
        ws = self.session.install_workspace()
        self.session.replace_workspace(None)
        self._apply_entries(entries)
        # each demo's own data set: the language demo's text (per token: perplexity right away)
        # is remembered in the settings, and the digits demo's MLPs cannot score it
        self.session.set_data(_DEMOS[kind].data)
        # The workspace's cached pre-flight check: the panes ask the same questions next.
        step = suggest_first_step(ws.base.tree if ws.base is not None else None,
                                  {name: e.tree for name, e in ws.zoo.items()},
                                  lambda name, layer, base: ws.check(name, layer, base).ok)
        if step is not None:
            ws.add_step(step)
        self.session.mark_clean()  # the demo is one click away: nothing to lose yet
        self._say(_DEMOS[kind].opened, 20000)
        self.modelsOpened.emit([e.name for _, e in entries])

    # -- start-up and recovery ----------------------------------------------------------------
    def open_at_startup(self, files: list[str], demo: str | None) -> None:
        """Once the engine is up: offer recovered work, then open what the command line asked
        for (files, or the ``demo`` zoo, "digits" or "language", unless work was restored), or
        offer the demo zoo on a first launch."""
        recovered = self.check_recovery()
        ws = self.session.workspace
        if files:
            # restored work is still loading: its base stays, the files join as zoo models
            self.open_paths(files, keep_base=recovered)
        elif demo and not recovered:  # restored work wins: the demo would replace it
            self.build_and_open_demo(demo)
        elif not recovered and not self.settings.demo_offered and not self._user_opened and (
                ws is None or ws.base is None):  # not over what the user opened meanwhile
            self.offer_demo()

    def check_recovery(self) -> bool:
        """Offer to restore autosaved work of a session that crashed; True when restoring."""
        data_dir = self.settings.data_dir()
        for recovery in find_recoveries(data_dir):
            answer = ask.offer_recovery(self.dialog_parent, recovery.describe())
            if answer == ask.LATER:
                return False
            if answer == ask.DISCARD:
                recovery.path.unlink(missing_ok=True)
                continue
            try:
                project = load_recovery(recovery)
            except ProjectError as exc:
                report_exception(exc, "Cannot restore the autosaved project", self.dialog_parent)
                return False
            self._load_project(project, recovery.project_path, dirty=True,
                               after=partial(discard_recovery, data_dir, recovery.pid))
            return True
        return False
