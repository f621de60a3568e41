"""supkd: knowledge distillation from supervised-contrastive (SupCon) teachers.

Method: Lee, Hyeon & Jeon, "Designing Distillation Losses for Effective Knowledge Transfer
from SupCon Representations". Documentation: the site built from docs/ (the design in
docs/design.md, the modules' contracts in docs/architecture.md).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
