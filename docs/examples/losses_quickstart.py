"""The losses in a Python session: build a KD loss by name, call it, backpropagate."""

import torch

from supkd.losses import LOSSES, SupConLoss, build_loss

print(list(LOSSES))  # every registered KD loss, the paper's first

z_s = torch.randn(64, 10, requires_grad=True)  # student logits (B, D_s)
z_t = torch.randn(64, 10)  # teacher logits (B, D_t), never gets a gradient
y = torch.randint(0, 10, (64,))

kd = build_loss("supcon_kd", temperature=0.1, normalize_student=True, normalize_teacher=False)
loss = kd(z_s, z_t, y)  # scalar, float32 even under autocast
loss.backward()

gram = build_loss("gram", normalize=True)  # B x B sample Gram: widths may differ
print(gram(torch.randn(64, 512), torch.randn(64, 2048)))

sup = SupConLoss(temperature=0.1)  # teacher pre-training (SimCLR when labels=None)
feats = torch.nn.functional.normalize(torch.randn(64, 2, 128), dim=-1)  # (B, V, D), L2-normalized
print(sup(feats, y))
