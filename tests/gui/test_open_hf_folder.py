"""The app opens Hugging Face model folders: dropped or given as the folder, or picked as its
config.json in the open dialog (which picks files); shown under the folder's name."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

from mal_desktop.gui.controllers.files import FilesController  # noqa: E402
from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402

pytestmark = pytest.mark.gui
pytest.importorskip("transformers")

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64,
          "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 24, "max_position_embeddings": 16}


def _folder(path: Path, seed: int, nan: str | None = None, **changes) -> Path:
    """A random tiny Llama folder; ``nan``: a tensor given one NaN value; ``changes``: to the
    config."""
    from mal_desktop.core.io.hf_config import build_module
    from mal_desktop.core.io.meta import tie_groups
    from mal_desktop.core.io.hf_write import write_hf_folder

    config = {**CONFIG, **changes}
    torch.manual_seed(seed)
    module = build_module(path, config, device="cpu")
    state = module.state_dict()
    if nan is not None:
        state[nan].view(-1)[0] = float("nan")
    return write_hf_folder(path, state, config, tied=tie_groups(module))


def test_folders_open_as_base_and_zoo(qtbot, session: SessionController, jobs: JobQueue,
                                      settings: Settings, tmp_path: Path) -> None:
    a = _folder(tmp_path / "llama-a.v1", 0)
    b = _folder(tmp_path / "llama-b", 1)
    files = FilesController(session, jobs, settings)
    assert files.openable([str(a), str(b / "config.json"), str(tmp_path)]) == [
        str(a), str(b / "config.json")]
    with qtbot.waitSignal(files.modelsOpened, timeout=60000) as opened:
        files.open_paths([str(a), str(b / "config.json")])
    assert opened.args == [["llama-a.v1", "llama-b"]]
    ws = session.workspace
    assert ws.base.name == "llama-a.v1" and list(ws.zoo) == ["llama-b"]
    assert ws.base.model.form == "hf-folder"
    layers = {n.layer.name for n in ws.base.tree.root.walk() if n.layer is not None}
    assert "model.layers.0.mlp.down_proj" in layers


def test_a_merge_of_folders_exports_as_a_folder_transformers_loads(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Export Merged Model offers a model folder first when the base is a Hugging Face folder;
    what it writes loads in transformers."""
    import transformers
    from PySide6.QtWidgets import QFileDialog

    from mal_desktop.core.merge.plan import AssemblyStep
    from mal_desktop.gui.controllers import run as run_module
    from mal_desktop.gui.controllers.run import EXPORT_FILTERS, RunController, merged_target

    a, b = _folder(tmp_path / "llama-a", 0), _folder(tmp_path / "llama-b", 1)
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(a), str(b)])
    ws = session.workspace
    layer = "model.layers.0.mlp.down_proj"
    assert ws.add_step(AssemblyStep("llama-b", layer, layer, 0.5)).ok
    runs = RunController(session, jobs)
    asked: list[tuple] = []
    out = tmp_path / "merged"

    def answer(parent, title, start, filters, selected):
        asked.append((Path(start).name, filters.split(";;"), selected))
        return str(out), EXPORT_FILTERS[1]

    monkeypatch.setattr(QFileDialog, "getSaveFileName", answer)
    assert run_module.QFileDialog is QFileDialog
    with qtbot.waitSignal(jobs.jobEnded, timeout=60000):
        runs.choose_merged_output()
    assert asked == [("llama-a-merged", list(EXPORT_FILTERS), EXPORT_FILTERS[1])]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert hf.config.hidden_size == CONFIG["hidden_size"]
    # the file type decides the name: a file gets its extension, a folder keeps the name
    assert merged_target("/x/m", EXPORT_FILTERS[0]) == "/x/m.safetensors"
    assert merged_target("/x/m", EXPORT_FILTERS[1]) == "/x/m"
    assert merged_target("/x/m.safetensors", EXPORT_FILTERS[1]) == "/x/m.safetensors"


@pytest.mark.parametrize("preview", [False, True])
def test_a_language_model_base_gets_a_text_data_set(qtbot, session: SessionController,
                                                     jobs: JobQueue, settings: Settings,
                                                     tmp_path: Path, model_files,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     preview: bool) -> None:
    """Curves of a language model on digits cannot be drawn: opening one as the base moves
    the data set to text (and says so, also when it showed from its headers first, as large
    models do); an image base moves it back."""
    from mal_desktop.core.project.demo import DEMO_DATA, LM_DEMO_DATA
    from mal_desktop.core import jobs as core_jobs

    if preview:  # a tiny folder counts as large
        monkeypatch.setattr(core_jobs, "HEADER_FIRST_PARAMETERS", 0)

    session.set_data(DEMO_DATA)
    files = FilesController(session, jobs, settings)
    said: list[str] = []
    files.message.connect(lambda text, _ms: said.append(text))
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(_folder(tmp_path / "llama", 0))])
    assert session.data == LM_DEMO_DATA
    assert said[-1] == (f"Opened llama; curves now on {LM_DEMO_DATA}: llama reads token ids")
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):  # a zoo model changes nothing
        files.open_paths([str(_folder(tmp_path / "other", 1))])
    assert session.data == LM_DEMO_DATA and said[-1] == "Opened other"
    from mal_desktop.gui.tasks import LoadRequest

    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.load_models([LoadRequest("base", "mlp", str(model_files["base_mlp"]))])
    assert session.data == DEMO_DATA and said[-1].endswith("mlp reads images or features, "
                                                           "not text")


def test_a_tied_output_layer_says_whose_parameters_it_holds(qtbot, tmp_path: Path) -> None:
    """An lm_head tied to the embeddings read '0' parameters: it holds a 64 x 16 matrix."""
    from PySide6.QtCore import Qt

    from mal_desktop.core.io.files import load_model
    from mal_desktop.gui.models.layer_text import COL_PARAMS
    from mal_desktop.gui.models.layer_tree_model import QtLayerTreeModel
    from mal_desktop.gui.workspace import ModelEntry

    tied = ModelEntry.from_model(load_model(_folder(tmp_path / "tied", 0,
                                                    tie_word_embeddings=True)), "tied")
    untied = ModelEntry.from_model(load_model(_folder(tmp_path / "untied", 0,
                                                      tie_word_embeddings=False)), "untied")
    assert tied.tree.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    assert untied.tree.tied == {}
    for entry, shown in ((tied, "tied"), (untied, "1,024")):
        model = QtLayerTreeModel(entry.tree, "base", entry.name)
        cell = model.index_of("lm_head").siblingAtColumn(COL_PARAMS)
        assert model.data(cell) == shown
        tip = model.data(cell, Qt.ItemDataRole.ToolTipRole)
        assert ("lm_head.weight is model.embed_tokens.weight (tied weights)" in tip) == \
            (shown == "tied"), tip
    # the model's total counts the shared matrix once
    assert tied.tree.total_params == untied.tree.total_params - 64 * 16
