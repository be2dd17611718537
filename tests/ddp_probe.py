"""Helper for tests/test_distributed.py: run `grpo-cli train` in a launched process and save this rank's
trainable parameters after step 1 (to compare across processes)."""

import os
import sys

import torch

from grpo_cli import callbacks

out_dir = sys.argv[1]
original = callbacks.RunLogger.on_step_end


def on_step_end(self, args, state, control, model=None, **kwargs):
    if state.global_step == 1:
        trainable = [p.detach().flatten() for p in model.parameters() if p.requires_grad]
        torch.save(torch.cat(trainable), os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
    return original(self, args, state, control, model=model, **kwargs)


callbacks.RunLogger.on_step_end = on_step_end
from grpo_cli.cli import main  # noqa: E402

sys.argv = ["grpo-cli", "train", *sys.argv[2:]]
main()
