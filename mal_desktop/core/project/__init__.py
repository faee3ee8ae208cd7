"""Project-level logic without Qt: .malproj documents, crash recovery, the demo zoo's choices and
the merged model of a plan. The GUI and the CLI sit on top of it (top core layer, beside study).
"""
