"""The paper's CIFAR-10 setting: RSC-II spiking VGG-11 (Wu et al., 2024, Table 1).

sigma = 0.2 and T = 4 are our defaults (the paper scans sigma; see SPEC §5); training
hyper-parameters follow SPEC §3. Needs tfds cifar10 prepared (see README).

One command (train, ANN twin for the transfer attack, evaluate, attacks at the ``rand``
preset on all 10,000 test images, certify 32 images, report):

    python -m rsc_jax.main --config=configs/cifar10_vgg11.py --workdir=runs/cifar10_vgg11

Expected run time (FLOP-based estimate, not measured; docs/GPU_RUNS.md): 4.9e17 FLOP
(attacks 93 %, Square's 40,000 forward passes per image most of it), i.e. ~2.2 h on one
A100-80GB (fp32 runs as TF32) or ~42 min on one H100 at an assumed 40 % utilisation.
The host input pipeline (~15 ms per batch) likely bounds each 78,000-step training at
>= 20 min. The previous default attack grid (docs/GPU_RUNS.md gives the flags): 6.2e16
FLOP, ~16 min on one A100. Several GPUs: the same command on an 8-GPU node uses them
all (data parallel; little gain at this size); several nodes: launch/slurm.sbatch.
bf16 (about 2x on tensor cores; accuracy not validated against fp32): add
``--config.model.dtype=bfloat16``.
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "cifar10"
    c.dataset.augment = True
    c.model.name = "vgg11"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 512           # divisible by 1-8 GPUs (and 16, 32, ...); results do not depend on it
    c.certify.image_batch = 8         # likewise (default 4 would not divide over 8 GPUs)
    config.use_rand_preset(c)         # attacks at AutoAttack-rand level (config.RAND_ATTACK)
    return c
