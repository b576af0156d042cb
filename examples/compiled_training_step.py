"""A compiled training step with fastdice: torch.compile(fullgraph=True,
dynamic=True) over model + loss; the fused ops trace without a graph break.

    python examples/compiled_training_step.py
"""

import torch

import fastdice


def main():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 1))
    criterion = fastdice.DiceLoss(activation="softmax", pooling="batch", include_background=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    @torch.compile(fullgraph=True, dynamic=True)
    def forward_loss(images, labels):
        return criterion(model(images), labels)

    for step in range(20):
        images = torch.randn(4, 1, 32, 32)
        labels = (images[:, 0] > 0.5).long() + (images[:, 0] > 1.5).long()  # a learnable toy task
        optimizer.zero_grad()
        loss = forward_loss(images, labels)
        loss.backward()
        optimizer.step()
        if step % 5 == 0:
            print(f"step {step:2d}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
