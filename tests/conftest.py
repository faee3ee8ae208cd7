"""Shared fixtures: a tiny demo zoo trained once per test session on real data (digits)."""

from __future__ import annotations

import os

import pytest

# The test models are tiny: one thread per process is faster than two fighting for 2 cores, and
# subprocesses (the CLI tests) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_user_caches(tmp_path_factory):
    """Per-file-version caches (hashes, discovered specs, evaluation cells) go to a folder of
    this test session, never the user's cache (subprocesses inherit the variables): a cell
    cached by an earlier run would make a test that counts computed cells pass or fail by
    what ran before."""
    root = tmp_path_factory.mktemp("user-cache")
    for var, name in (("MAL_HASH_CACHE", "hashes"), ("MAL_SPEC_CACHE", "specs"),
                      ("MAL_EVAL_CACHE", "eval")):
        os.environ.setdefault(var, str(root / name))
    yield


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same global torch seed, so models built with default init
    (``nn.Linear(...)`` in a test's arguments) have the same weights whatever ran before or
    alone: a failure reproduces with ``pytest -k`` on that one test."""
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory):
    """The ``--small`` demo zoo (a few MLPs, a CNN, a ResNet trained for seconds) -> ZooIndex."""
    from mal_desktop.core.progress import run_job
    from mal_desktop.core.zoo.build import build_zoo_job, default_zoo

    out = tmp_path_factory.mktemp("zoo")
    return run_job(build_zoo_job(out, default_zoo(small=True), None))


@pytest.fixture(scope="session")
def small_study_zoo_dir(tmp_path_factory):
    """Where the ``--small`` study's zoo is trained, shared by the tests that run a small study
    on a built zoo (the first such run trains it; the others reuse its models and curve cache).
    Tests of a cold study use their own folders."""
    return tmp_path_factory.mktemp("small-study") / "zoo"
