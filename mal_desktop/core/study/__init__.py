"""The MAL study: measure the laws of mal_method.md section 8 on the demo zoo (see study.py)."""

from .report import FIGURES
from .study import StudyResult, StudySettings, study_job

__all__ = ["FIGURES", "StudyResult", "StudySettings", "study_job"]
