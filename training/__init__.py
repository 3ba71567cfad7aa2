"""Training package: the Re-ID model C (AGW and light backbones) and, in ``mode_gcr``, the anonymizer.

Command line (the seed's ``tools/main.py``, same keys and value spellings)::

    python -m training --config_file configs/AGW_baseline.yml DATASETS.ROOT_DIR /data \\
        DATASETS.NAMES "('market1501')" INPUT.TYPE "mosaic" INPUT.RADIUS "24.0" \\
        OUTPUT_DIR "('./log/market1501/market1501-base-mosaic')" MODEL.MODE "C"
    python -m training.split --dataset_root_dir /data --dataset_name market1501   # -> market1501_val
    torchrun --nproc_per_node 2 -m training ...                                    # DDP
    python -m training.eval_onnx --model X.onnx --config_file ... --output DIR     # third-party model

Modules: ``config`` (keys, seed spellings), ``datasets`` (registry), ``transforms``/``data`` (paired
O/M pairs, PK sampler), ``losses``, ``evaluation`` (four settings, CMC/mAP/mINP), ``checkpoint``,
``engine`` (setup, process group, dispatch, reporting), ``trainer`` + ``hooks`` (the one training
loop: resume, LR schedule, mixed precision, DDP, hooks), ``mode_c`` (Base), ``mode_gcr`` with
``gcr_models``/``gcr_steps``/``gcr_eval``/``gcr_checkpoint`` (the learned anonymizer),
``upgradation`` (the rule), ``export`` (bundle). Nothing outside ``training`` imports it; the model
definitions live in ``reid.models``.
"""
