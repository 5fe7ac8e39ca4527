"""Time one training trial: detectron2_ext.train_net's setup and Trainer, plus a hook that records every
iteration's wall time and this process's CPU time (the CPU time is what other jobs on a shared machine
do not inflate). Needs detectron2. Used by the commands in README.md:

    OMP_NUM_THREADS=1 DETECTRON2_DATASETS=... python docs/results/experiments/detection/trials/clock_trial.py \
        --config-file detectron2_ext/configs/shapes/<config>.yaml SOLVER.MAX_ITER 100 ...

writes OUTPUT_DIR/clock.json: [[iteration, wall seconds, CPU seconds], ...].
"""

import json
import time
from pathlib import Path

from detectron2.engine import HookBase, default_argument_parser

from detectron2_ext import train_net
from detectron2_ext.data_catalog import register_shapes


class Clock(HookBase):
    def __init__(self, path: Path):
        self.path, self.rows = path, []

    def before_step(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def after_step(self):
        self.rows.append((self.trainer.iter, time.perf_counter() - self.wall, time.process_time() - self.cpu))

    def after_train(self):
        self.path.write_text(json.dumps(self.rows))


if __name__ == "__main__":
    cfg = train_net.setup(default_argument_parser().parse_args())
    register_shapes(cfg)
    trainer = train_net.Trainer(cfg)
    trainer.register_hooks([Clock(Path(cfg.OUTPUT_DIR) / "clock.json")])
    trainer.resume_or_load(resume=False)
    trainer.train()
