"""A DDP communication hook that makes the all-reduce slow on purpose, for the test that
checks slow communication shows up as exposed communication and not as compute.

No ``from __future__ import annotations`` here: DDP checks the hook's annotations as objects."""


import time

import torch
import torch.distributed as dist

DELAY_SEC = 0.05


def sleepy_allreduce(state, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    time.sleep(DELAY_SEC)  # a link this much slower per bucket
    tensor = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])
