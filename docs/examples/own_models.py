"""Distill with your own modules and DataLoaders: a torchvision ResNet-18 teacher into a
ResNet-10 student on scikit-learn's digits (offline, about a minute on two CPU cores)."""

import torch
import torchvision
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.resnet import BasicBlock, ResNet

from supkd.train import distill, train_classifier

digits = load_digits()  # 1,797 8x8 images, 10 classes, bundled with scikit-learn
x = torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1).repeat(1, 3, 1, 1)
y = torch.tensor(digits.target)
train = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=True)
test = DataLoader(TensorDataset(x[1500:], y[1500:]), batch_size=300)

teacher = torchvision.models.resnet18(num_classes=10)  # or load your trained weights
train_classifier(teacher, train, test_loader=test, epochs=1, lr=0.05, device="cpu")

student = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)  # a ResNet-10
result = distill(
    student, teacher, train, test_loader=test,
    loss="supcon_kd", alpha=1.0, representation="logits",
    epochs=2, lr=0.05, device="cpu", out="runs/kd_run",
)
print(f"student test accuracy: {result['test_acc']:.1f}%")
