"""Allocates (and touches) far more memory than a submission may use."""
THREAT = "memory bombs"
EXPECT = {"score": "full", "status": "memory-limit"}


def build(sub):
    sub.add_cell("import torch\nhog = [torch.ones(256, 1024, 1024) for _ in range(24)]  # 24 GiB")
