"""supkd: knowledge distillation from supervised-contrastive (SupCon) teachers.

Method: Lee, Hyeon & Jeon, "Designing Distillation Losses for Effective Knowledge Transfer
from SupCon Representations" (see DESIGN.md and the README).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
