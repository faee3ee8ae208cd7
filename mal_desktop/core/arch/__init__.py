"""Architecture registry: the families mal_desktop can rebuild from a (family, config) pair.

The lowest layer of the core above errors/progress: model files (``io``) rebuild saved models
from it, the demo-zoo builder trains its members from it, and nothing here imports either.
"""
