"""Global-batch Dice under DDP: the statistics are all-reduced across ranks
before the ratio, so the loss is the Dice of the whole global batch (nnU-Net's
"batch dice"), and after DDP's gradient averaging the parameter gradients
equal single-process training on the concatenated batch.

    torchrun --nproc_per_node=2 examples/ddp_batch_dice.py          # gloo, CPU
"""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import fastdice


def main():
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("WORLD_SIZE", 1))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    torch.manual_seed(0)  # same initial weights on every rank
    model = DDP(torch.nn.Conv2d(1, 3, 3, padding=1).to(device), device_ids=[device.index] if use_cuda else None)
    criterion = fastdice.DiceLoss(activation="softmax", pooling="batch", distributed=True, ignore_index=255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(100 + rank)  # each rank its own data
    for step in range(5):
        images = torch.randn(2, 1, 16, 16, device=device)
        labels = torch.randint(0, 3, (2, 16, 16), device=device)
        optimizer.zero_grad()
        loss = criterion(model(images), labels)  # the same global-batch loss on every rank
        loss.backward()
        optimizer.step()
        if rank == 0:
            print(f"step {step}  global-batch Dice loss {loss.item():.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
