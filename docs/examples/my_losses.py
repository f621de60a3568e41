"""A loss of your own, in your own module: ``supkd --plugin my_losses.py ...`` imports it."""

from supkd.losses import KDLoss, register_loss


@register_loss("l1_kd")
class L1KD(KDLoss):
    """Mean over the batch of the L1 distance of teacher and student vectors.

    Shapes: student (B, D), teacher (B, D); returns a scalar.

    Args:
        scale: factor on the loss (becomes ``task.loss_args.scale``).
    """

    label = "L1 KD"  # row label in reports
    paper_eq = "mean_i ||z_t - z_s||_1"
    summary = "L1 distance of teacher and student vectors"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def compute(self, student, teacher, labels):  # float32 (B, D), (B, D), (B,) | None
        return self.scale * (teacher - student).abs().sum(dim=1).mean()
