"""Speech experiments with a (Bi)LSTM (experiments/speech; docs/speech.md).

    python -m experiments.main --config=configs/speech.py:fsdd --workdir=workdirs/fsdd
    python -m experiments.main --config=configs/speech.py:japanese_vowels --workdir=workdirs/jv
    python -m experiments.main --config=configs/speech.py:kws --workdir=workdirs/kws
    python -m experiments.main --config=configs/speech.py:fsdd_ctc --workdir=workdirs/fsdd_ctc

ARG: 'fsdd' (isolated digits) | 'japanese_vowels' (speakers; its default setting was
chosen by cross-validation on the training split, `cv_grid` below) | 'kws' (keyword
spotting on espeak-ng audio; needs the Debian package espeak-ng; the first run
synthesizes the corpus, a few minutes) | 'fsdd_ctc' (connected digits from FSDD
utterances, CTC), optionally followed by ':tiny' (a seconds-long run for tests), e.g.
`--config=configs/speech.py:fsdd:tiny`.
"""

from __future__ import annotations

import ml_collections

from lstm_jax.train.config import base_config

DATASETS = ('fsdd', 'japanese_vowels', 'kws', 'fsdd_ctc')


def get_config(arg: str = 'fsdd') -> ml_collections.ConfigDict:
  name, _, size = arg.partition(':')
  if name not in DATASETS or size not in ('', 'tiny'):
    raise ValueError(f"ARG must be one of {DATASETS}, optionally with ':tiny'; got {arg!r}.")
  c = base_config()
  c.experiment = 'speech'
  c.seed = 0
  c.batch_size = 32
  c.log_every = 50
  c.best_metric = 'eval/accuracy'
  c.best_mode = 'max'

  c.data.name = 'fsdd' if name == 'fsdd_ctc' else name
  # classify: one label per utterance; ctc: connected digits (experiments/speech/
  # connected_digits.py), FSDD only.
  c.data.task = 'ctc' if name == 'fsdd_ctc' else 'classify'
  c.data.data_dir = ''  # TFDS cache; '' = ~/.cache/lstm_jax/tfds.
  c.data.test_fraction = 0.2  # FSDD only: no fixed test split ships.
  c.data.val_fraction = 0.1  # Of the training split: eval during training.
  c.data.split_seed = 0
  # Cross-validation on the training split (experiments/speech/cv.py sets these): val =
  # fold cv_fold of cv_folds stratified folds, train = the rest, test unused. 0 = off.
  c.data.cv_folds = 0
  c.data.cv_fold = 0
  c.data.eval_batch_size = 200
  c.data.cmvn = 'global'  # global (fit on train) | utterance | none.
  c.data.deltas = 0  # Append this many orders of delta features (5-frame window).
  c.data.spec_augment = False
  c.data.freq_masks = 1
  c.data.freq_width = 2
  c.data.time_masks = 1
  c.data.time_width = 5
  c.data.noise_std = 0.0

  c.model.hidden_size = 64
  c.model.num_layers = 1
  c.model.bidirectional = True
  c.model.proj_size = 0  # LSTMP projection size; 0 = off.
  c.model.dropout = 0.0
  c.model.pooling = 'mean'  # last | mean | max | attention.
  c.model.attention_size = 32
  c.model.input_dropout = 0.0
  c.model.head_dropout = 0.0
  c.model.label_smoothing = 0.0

  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = 'warmup_cosine'
  c.optimizer.warmup_steps = 100
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.weight_decay = 1e-4

  if name == 'fsdd':
    c.total_steps = 3000
    c.eval_every = 500
    c.checkpoint_every = 1000
    c.data.spec_augment = True
    c.model.hidden_size = 64
    c.model.pooling = 'attention'
    c.model.head_dropout = 0.2
  elif name == 'japanese_vowels':
    c.total_steps = 1500
    c.eval_every = 250
    c.checkpoint_every = 500
    c.data.noise_std = 0.1
    # Chosen by 5-fold cross-validation on the 270 training utterances (deltas 0/1 x
    # pooling mean/attention, `cv_grid`; results/speech/japanese_vowels_cv.md), then
    # trained on all 270: no validation split, eval monitors the training set.
    c.data.val_fraction = 0.0
    c.data.deltas = 1  # 12 LPC cepstra + their deltas.
    c.model.hidden_size = 64
    c.model.pooling = 'attention'
    c.model.head_dropout = 0.2
  elif name == 'kws':
    c.total_steps = 2000
    c.eval_every = 500
    c.checkpoint_every = 1000
    c.data.val_fraction = 0.0  # Unused: KWS has its own validation split (held-out voices).
    # Per-utterance CMVN: normalizes away some of the voice, which matters because the
    # test voices are held out (global CMVN: 83.7% test, utterance: 91.0%; docs/speech.md).
    c.data.cmvn = 'utterance'
    c.data.spec_augment = True
    c.data.freq_masks = 2
    c.data.freq_width = 6
    c.data.time_masks = 2
    c.data.time_width = 10
    c.model.hidden_size = 64
    c.model.pooling = 'attention'
    c.model.head_dropout = 0.2

  elif name == 'fsdd_ctc':
    # Strings of 2-5 FSDD utterances with 0-3 pause frames between them; training strings
    # from training utterances only (fresh every batch), val/test strings fixed.
    c.data.min_digits = 2
    c.data.max_digits = 5
    c.data.max_gap = 3
    c.data.max_frames = 200  # Training pad length; longer draws (rare) are redrawn.
    c.data.num_val_strings = 500
    c.data.num_test_strings = 500
    c.data.eval_batch_size = 250
    c.best_metric = 'eval/label_error_rate'
    c.best_mode = 'min'
    c.total_steps = 2000
    c.eval_every = 500
    c.checkpoint_every = 1000
    c.data.spec_augment = True  # One band of <= 2 MFCCs, one span of <= 3 frames.
    c.data.time_width = 3
    c.model.hidden_size = 96
    c.model.num_layers = 1
    c.model.head_dropout = 0.1

  if size == 'tiny':
    c.total_steps = 2
    c.batch_size = 8
    c.log_every = 1
    c.eval_every = 2
    c.checkpoint_every = 2
    c.model.hidden_size = 8
    c.model.attention_size = 4
    c.data.eval_batch_size = 400 if c.data.task == 'classify' else 500
    c.optimizer.schedule = 'constant'
    c.optimizer.warmup_steps = 0
  return c


def cv_grid(arg: str = 'japanese_vowels') -> list[dict]:
  """The candidates that experiments/speech/cv.py compares by stratified k-fold
  cross-validation on the training split (dotted overrides, simplest first):

      python -m experiments.speech.cv --config=configs/speech.py:japanese_vowels \\
          --workdir=workdirs/jv_cv --out=results/speech
  """
  name, _, size = arg.partition(':')
  if name != 'japanese_vowels':
    raise ValueError(f'cv_grid is defined for japanese_vowels only; got {arg!r}.')
  del size  # ':tiny' only shortens each run.
  return [{'data.deltas': deltas, 'model.pooling': pooling}
          for deltas in (0, 1) for pooling in ('mean', 'attention')]

