"""Mixed precision with fastdice: the loss takes half-precision logits as they
come out of autocast, accumulates in float32, returns a float32 loss and works
with GradScaler. CUDA uses float16 (bfloat16 works too); CPU uses bfloat16.

    python examples/amp_training_step.py
"""

import torch

import fastdice


def main():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 4, 1)).to(device)
    criterion = fastdice.DiceLoss(activation="softmax", pooling="sample", smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device)
    for step in range(10):
        volume = torch.randn(2, 1, 32, 32, 32, device=device)
        labels = torch.randint(0, 4, (2, 32, 32, 32), device=device)
        optimizer.zero_grad()
        with torch.autocast(device, dtype=amp_dtype):
            logits = model(volume)  # half precision
            loss = criterion(logits, labels)  # float32
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        print(f"step {step}  logits {logits.dtype}  loss {loss.dtype} {loss.item():.4f}")


if __name__ == "__main__":
    main()
