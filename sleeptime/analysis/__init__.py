"""Analyses of measured answers: the published curves, amortized cost, predictability."""

from sleeptime.analysis.frames import AnalysisFrames, load_frames

__all__ = ["AnalysisFrames", "load_frames"]
