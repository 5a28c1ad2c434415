# UPerNet, EPSANet-50 (small), ADE20K 512x512, 160k iterations: the 80k
# recipe with mmseg's schedule_160k.py in place of schedule_80k.py (the
# schedule twice as long, validation and checkpoints every 16k iterations).
_base_ = './upernet_epsanet50-s_4xb4-80k_ade20k-512x512.py'

param_scheduler = [dict(_base_.param_scheduler[0], end=160000)]
train_cfg = dict(max_iters=160000, val_interval=16000)
default_hooks = dict(checkpoint=dict(interval=16000))
