"""The paper's ImageNet setting: RSC-II SEW-ResNet-34 (Fang et al., 2021), T = 4.

Batch 256 with SGD 0.1 over 100 epochs is ours (SPEC §3 optimiser, the SEW-ResNet
paper's schedule length). remat on: BPTT over T = 4 at 224x224 needs it on 80 GB GPUs.
Needs tfds imagenet2012 prepared with manual downloads (see README).

One command (train, ANN twin for the transfer attack, evaluate, attacks at the ``rand``
preset on the first 1,000 validation images, certify 32 images, report):

    python -m rsc_jax.main --config=configs/imagenet_sewresnet34.py --workdir=runs/imagenet_sewresnet34

Expected run time (FLOP-based estimate, not measured; docs/GPU_RUNS.md): 1.5e19 FLOP
(training 68 %, ANN twin 22 %, attacks 9 %), i.e. ~68 h on one A100-80GB (fp32 runs as
TF32), ~21 h on one H100, ~2.7 h on 8 H100s (TF32) at an assumed 40 % utilisation. The host input pipeline (threaded JPEG decode and resize, several ms per
image per thread) may not keep up on a host with few cores: see docs/GPU_RUNS.md before
spending GPU hours. ``--config.attack.num_examples=-1`` (all 50,000) multiplies the
attack stage by 50 (6.7e19 FLOP). Several GPUs: the same command on an 8-GPU node; several nodes:
``sbatch --nodes=N launch/slurm.sbatch --config=configs/imagenet_sewresnet34.py
--workdir=/shared/runs/imagenet_sewresnet34 --config.dataset.data_dir=/shared/tfds``
(with 16 or more GPUs also ``--config.certify.image_batch=<a multiple of the GPU count>``).
bf16 (about 2x on tensor cores; accuracy not validated): ``--config.model.dtype=bfloat16``.
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "imagenet2012"
    c.dataset.image_size = 224
    c.model.name = "sew_resnet34"
    c.model.remat = True
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 100
    c.train.batch_size = 256
    c.train.lr = 0.1
    c.train.weight_decay = 1e-4
    c.train.checkpoint_every = 2000
    c.train.log_every = 100
    c.eval.batch_size = 64            # 10 draws x T 4 x 64 images at once: ~15 GiB on one GPU (256: ~62 GiB)
    c.certify.image_batch = 8         # divisible by 1-8 GPUs; with batch 50 one GPU holds 8 x 50 draws,
    c.certify.batch = 50              # as many as the defaults' 4 x 100 (counts do not depend on either)
    config.use_rand_preset(c)         # attacks at AutoAttack-rand level (config.RAND_ATTACK),
    c.attack.num_examples = 1000      # on the first 1,000 validation images (all 50,000: ~50x the attack time)
    return c
