"""Analyses of measured answers: the published curves, amortized cost, predictability."""

from sleeptime.analysis.frames import AnalysisFrames, load_frames
from sleeptime.analysis.summary import accuracy_table

__all__ = ["AnalysisFrames", "accuracy_table", "load_frames"]
