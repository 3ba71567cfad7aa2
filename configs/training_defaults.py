"""Defaults of the training package (``python -m training``), keyed as the seed's AGW config.

Key names and meanings follow the seed (``configs/AGW_baseline.yml`` of privacy-reid) so its
commands run unchanged with ``tools/main.py`` replaced by ``-m training``. Keys marked "ours" are
additions; every key is documented where it is used.
"""

from yacs.config import CfgNode as CN

_C = CN()

_C.MODEL = CN()
_C.MODEL.DEVICE = "cuda"  # falls back to cpu when CUDA is absent (logged)
_C.MODEL.DEVICE_ID = "0"
_C.MODEL.NAME = "resnet50_nl"  # AGW: resnet50_nl; light: shufflenetv2_x0_5 | resnet18 | resnet50
_C.MODEL.LAST_STRIDE = 1
_C.MODEL.PRETRAIN_CHOICE = "imagenet"  # imagenet | self | none
_C.MODEL.PRETRAIN_PATH = ""  # ImageNet weights file (offline); '' = torchvision cache / download;
# with NAME onnx: the public Re-ID model (ONNX) C starts from
_C.MODEL.ONNX_INPUT_SIZE = []  # with NAME onnx: H, W the graph expects; [] = read from the graph
_C.MODEL.PRETRAIN_DIR = ""  # a run folder to resume or evaluate ('self')
_C.MODEL.EPOCH = "best"  # seed key: which checkpoint of PRETRAIN_DIR 'self' loads: best | last | N
_C.MODEL.NECK = "bnneck"
_C.MODEL.GENERALIZED_MEAN_POOL = "on"
_C.MODEL.NON_LOCAL = "on"
_C.MODEL.ID_LOSS_TYPE = "softmax"
_C.MODEL.METRIC_LOSS_TYPE = "triplet"  # triplet | wrt (weighted regularized triplet)
_C.MODEL.IF_LABELSMOOTH = "on"
_C.MODEL.CENTER_LOSS = "on"
_C.MODEL.CENTER_FEAT_DIM = 2048
_C.MODEL.WEIGHT_REGULARIZED_TRIPLET = "on"
_C.MODEL.MODE = "GCR"  # C (Base: hybrid raw + desensitized) | GCR (learned anonymizer)
_C.MODEL.NETG = "unet_256"  # unet_256 | unet_128 | resnet_9blocks | resnet_6blocks (pix2pix)
_C.MODEL.NGF = 64
_C.MODEL.NDF = 64
_C.MODEL.N_LAYERS_D = 3
_C.MODEL.NORM = "batch"
_C.MODEL.OUTPUT_MODE = "both"  # both | protected | origin: which images C sees in GCR
_C.MODEL.LAMBDA_L1 = 100.0
_C.MODEL.LAMBDA_REC = 100.0
_C.MODEL.VAL_R1 = 0.0  # ε_r1: rank-1 as a fraction in [0, 1] (seed config: 0.75) of a w/o-upgradation
# model, raw query vs protected gallery; evaluation reports fractions too
_C.MODEL.PSNR = 1.0  # ε_psnr (dB)
_C.MODEL.SSIM = 0.05  # ε_ssim
_C.MODEL.PRIVACY_ATTACKERS = []  # ours: outside Re-ID models (ONNX) run at each validation; a kept encoder
# must leave each no better on P than on M (training/attacker_check.py)
_C.MODEL.ATTACKER_MARGIN = 0.02  # ours: how much better (rank-1 fraction) an attacker may do on P than on M
_C.MODEL.ATTACKER_QUERIES = "both"  # ours: "both" = the attackers' rank-1 pools validation's query->gallery
# and gallery->query (twice the queries, the same cross-camera task: about half the chance refusals,
# benchmarks/veto_noise.py); "split" = query->gallery only, as C's validation rank-1
_C.MODEL.KEEP_MIN_RECOVERY_PSNR = 0.0  # ours: a validation is kept (saved best, upgrade) only when its
# PSNR(O,R) reaches this many dB; 0 = off (docs/method.md keeps on rank-1 alone)
_C.MODEL.VAL_PERIOD = 5  # validate / consider upgrading every N epochs
_C.MODEL.UPGRADE_MARGIN = 0.0  # ours: freeze an encoder only within (1 - margin)·ε of M (0 = docs/method.md);
# leaves room for the drift towards O that follows an upgrade
# --- ours (learned anonymizer) ---
_C.MODEL.REID_GRAD_G = 1.0  # scale of the ReID(C(P)) gradient that reaches G (C itself always gets the
# full loss); 1.0 = docs/method.md. <1 lets short CPU runs reach the L1 target M
_C.MODEL.FREEZE_C = False  # ours: keep C exactly as loaded (PRETRAIN_CHOICE self, e.g. a Base run; eval
# mode, no updates): only G learns, through C's Re-ID loss, to make P more
# matchable than M for that same C. False = docs/method.md (C trained jointly)
_C.MODEL.G_SKIP_BLUR_SIGMA = 0.0  # ours: >0 makes G = fixed Gaussian blur (σ in pixels at INPUT.IMG_SIZE) + a
# network, its last layer zero-initialized, so P = blur(O) ≈ M at the start
# (anonymizer.networks.BlurSkipGenerator); 0 = the plain U-Net of docs/method.md
_C.MODEL.G_SKIP_MOSAIC = 0  # ours: >0 makes G = fixed mosaic (this block size in pixels at INPUT.DESENS_SIZE,
# as INPUT.RADIUS for M; scaled to INPUT.IMG_SIZE) + a network, its last layer
# zero-initialized, so P = M at the start (anonymizer.networks.MosaicSkipGenerator);
# not together with G_SKIP_BLUR_SIGMA; 0 = the plain U-Net of docs/method.md
_C.MODEL.G_SKIP_DETAIL = 0.0  # ours: with G_SKIP_BLUR_SIGMA, the blur branch keeps this share of O's detail,
# and G's supervision (L1 target, D1's real pair) is (1-a)·M + a·O instead of M
# until an upgrade replaces it; P must still pass the ε check against M
# (anonymizer.networks.DetailBlur); 0 = docs/method.md
_C.MODEL.G_PAYLOAD_SCALE = 0.0  # ours: >0 makes G write a recovery code of 3 more channels into P at this
# amplitude ([-1, 1] units), permuted inside 16×16 tiles so that it does not
# raise SSIM(O, P), and G_R read it back (anonymizer.payload); 0 = docs/method.md
_C.MODEL.G_PAYLOAD_SEED = 0  # seed of that fixed permutation (stored in bundle.yaml; not a secret)
_C.MODEL.C_INPUT_BLUR_SIGMA = 0.0  # ours: >0 puts a fixed Gaussian blur (σ in pixels) in front of C, for raw and
# protected inputs alike, so that C sees little of a payload code (white at the
# pixel scale); stored with C in bundles; 0 = docs/method.md
_C.MODEL.C_READER_NGF = 0  # ours: >0 puts a payload reader (a U-Net of this width, as G_R's) with a raw/protected
# gate in front of C's backbone, learned with C, so that C reads the code G writes
# on a mosaic, not only the mosaic (anonymizer.payload_front); it ships with C;
# needs G_PAYLOAD_SCALE > 0 and G_SKIP_MOSAIC > 0; 0 = C reads P directly
_C.MODEL.C_READER_L1 = 10.0  # weight of the L1 between the reader's image of P and O (teaches it to read the code
# before the Re-ID loss refines it; reaches G scaled by REID_GRAD_G, as C's loss)
_C.MODEL.C_READER_GATE = 1.0  # weight of the gate's BCE (raw images 0, protected 1)
_C.MODEL.CROSS_KIND_TRIPLET = 0.0  # ours: >0 adds this weight × the metric loss mined across the raw and the
# protected half of each hybrid batch (training.losses.ReidLoss.cross_kind), in
# MODE C (raw vs M) and GCR (raw vs P) alike; 0 = docs/method.md (each half alone)
_C.MODEL.G_INIT_DIR = ""  # ours: a GCR run (OUTPUT_DIR) whose encoder G starts this run and is its first
# supervision (as if upgraded to it): e.g. a model without a payload, whose P
# matches well, gets a payload written on top (anonymizer.payload
# .load_visible_weights); G_R, D1, D2 start fresh, C from PRETRAIN_DIR. "" = off
_C.MODEL.G_INIT_EPOCH = "last"  # which checkpoint of G_INIT_DIR: best | last | N
_C.MODEL.G_WARMUP_ITERS = 0  # ours: before the joint training, this many iterations train G and G_R alone
# on 100·|P−M|₁ + 100·|R−O|₁ (no C, no GAN), so that C sees P ≈ M from its
# first step, as Base's C does; 0 = docs/method.md (joint from the start)

_C.INPUT = CN()
_C.INPUT.IMG_SIZE = [256, 128]  # H, W
_C.INPUT.PROB = 0.5  # horizontal flip
_C.INPUT.RE_PROB = 0.5  # random erasing
_C.INPUT.PADDING = 10
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.TYPE = "mosaic"  # mosaic | blur | noise: the desensitization M
_C.INPUT.RADIUS = 24.0  # mosaic block / blur radius / noise sigma
_C.INPUT.DESENS_SIZE = [256, 128]  # ours: H, W at which M is computed (the paper's 256×128), then resized
# (nearest) to IMG_SIZE, so M means the same at any training size

_C.DATASETS = CN()
_C.DATASETS.NAMES = "market1501"  # market1501 | msmt17 | cuhk03 | cuhk01 | folder, '_val' variants
_C.DATASETS.ROOT_DIR = "./data"
_C.DATASETS.SPLIT_SEED = 0  # ours: seed of random protocols (CUHK01 485/486 identities) and of M's noise
_C.DATASETS.VAL_FRACTION = 0.2  # ours: without a _val split, hold out this fraction of (sorted) training
# identities as validation for model selection; 0 = none (last epoch kept)
_C.DATASETS.CUHK03_TYPE = "detected"  # ours: detected | labeled (CUHK03-NP layout)

_C.DATALOADER = CN()
_C.DATALOADER.PK_SAMPLER = "on"
_C.DATALOADER.NUM_INSTANCE = 4
_C.DATALOADER.NUM_WORKERS = 4

_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER_NAME = "Adam"
_C.SOLVER.MAX_EPOCHS = 120
_C.SOLVER.BASE_LR = 0.00035
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0005
_C.SOLVER.BETA1 = 0.5  # Adam β1 for G, G_R, D1, D2
_C.SOLVER.HEAD_LR_FACTOR = 1.0  # ours: a Re-ID model's new head (BN-neck, classifier) learns at this × BASE_LR
# (fast-reid's HEADS_LR_FACTOR); 1.0 = the seed (one rate for all)
_C.SOLVER.CENTER_LR = 0.5
_C.SOLVER.CENTER_LOSS_WEIGHT = 0.0005
_C.SOLVER.MARGIN = 0.3
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = [40, 80]
_C.SOLVER.WARMUP_FACTOR = 0.01
_C.SOLVER.WARMUP_EPOCHS = 10
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 10
_C.SOLVER.LOG_PERIOD = 20
_C.SOLVER.EVAL_PERIOD = 10
_C.SOLVER.IMS_PER_BATCH = 64
_C.SOLVER.MAX_ITERS_PER_EPOCH = 0  # ours: 0 = full epoch; >0 caps iterations (smoke runs)
_C.SOLVER.AMP = "on"  # ours: mixed precision on CUDA
_C.SOLVER.SEED = 0  # ours
_C.SOLVER.SELECT_METRIC = "mean_mAP"  # ours: validation metric for the best checkpoint: mean_mAP | mean_rank1 |
# SETTING:METRIC, e.g. "raw->protected:rank1"
_C.SOLVER.RESUME = "on"  # ours: continue from OUTPUT_DIR/checkpoints/last when it exists
_C.SOLVER.CPU_THREADS = 0  # ours: torch.set_num_threads on CPU; 0 = torch's default

_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 128
_C.TEST.RE_RANKING = "off"
_C.TEST.WEIGHT = ""
_C.TEST.NECK_FEAT = "after"
_C.TEST.FEAT_NORM = "on"
_C.TEST.EVALUATE_ONLY = "off"
_C.TEST.PARTIAL_REID = "off"
_C.TEST.GALLERY_MODE = "origin"  # origin | protected | both: gallery image kind when ALL_SETTINGS is off
_C.TEST.QUERY_MODE = "origin"  # origin | protected | both (both = each kind, settings are crossed)
_C.TEST.ALL_SETTINGS = "on"  # ours: evaluate all four query/gallery settings

_C.OUTPUT_DIR = "./log"


def get_training_defaults() -> CN:
    """A fresh copy of the training defaults."""
    return _C.clone()
