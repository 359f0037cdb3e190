"""The paper's CIFAR-100 setting: RSC-II spiking ResNet-19 (Zheng et al., 2021 backbone).

sigma = 0.2 and T = 4 are our defaults; training follows SPEC §3. Needs tfds cifar100.

One command (train, ANN twin for the transfer attack, evaluate, attacks at the ``rand``
preset on all 10,000 test images, certify 32 images, report):

    python -m rsc_jax.main --config=configs/cifar100_resnet19.py --workdir=runs/cifar100_resnet19

Expected run time (FLOP-based estimate, not measured; docs/GPU_RUNS.md): 9.0e18 FLOP
(ResNet-19 costs 18x VGG-11 per image; attacks 93 %), i.e. ~40 h on one A100-80GB
(fp32 runs as TF32), ~12.7 h on one H100, ~5 h on 8 A100s at an assumed 40 %
utilisation; ``--config.attack.square_draws=1`` about halves it. Several GPUs: the same command on an 8-GPU
node uses them all (data parallel); several nodes: launch/slurm.sbatch. bf16 (about 2x
on tensor cores; accuracy not validated against fp32): add ``--config.model.dtype=bfloat16``.
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "cifar100"
    c.dataset.augment = True
    c.model.name = "resnet19"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 256           # divisible by 1-8 GPUs; ~20 GiB for 10 draws x T 4 on one GPU (500: ~39 GiB)
    c.certify.image_batch = 8         # divisible by 1-8 GPUs (default 4 would not divide over 8)
    config.use_rand_preset(c)         # attacks at AutoAttack-rand level (config.RAND_ATTACK)
    return c
